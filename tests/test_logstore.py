"""The log store's line-offset contract."""

import threading

from builds import logstore


def test_offsets_survive_carriage_returns_and_compression(tmp_path):
    w = logstore.LogWriter(tmp_path)
    lines = ["plain", "progress 10%\rprogress 100%", "tab\there", "unicode ✓ \u2028 sep", ""]
    assert w.write(lines[:2]) == 0 and w.write(lines[2:]) == 2
    w.close()
    assert logstore.read_lines(tmp_path) == lines
    assert logstore.read_lines(tmp_path, 1, 3) == lines[1:3]
    logstore.compress(tmp_path)
    assert not (tmp_path / "log").exists()
    assert logstore.read_lines(tmp_path, 1) == lines[1:]


def test_split_text():
    assert logstore.split_text("a\r\nb\nc\n") == ["a", "b", "c"]
    assert logstore.split_text("") == []
    assert logstore.split_text("x\ry") == ["x\ry"]


def test_concurrent_emitters_keep_offsets(tmp_path, monkeypatch):
    """The job's reader thread and watchdog both emit; offsets must match."""
    from builds import jobs

    published = []

    class FakePublisher:
        def output(self, offset, data):
            published.append((offset, data))

    runner = jobs.BuildRunner.__new__(jobs.BuildRunner)
    runner.emit_lock = threading.Lock()
    runner.writer = logstore.LogWriter(tmp_path)
    runner.publisher = FakePublisher()

    def spam(tag):
        for i in range(2000):
            runner.emit([f"{tag} {i}"])

    threads = [threading.Thread(target=spam, args=(t,)) for t in "ab"]
    [t.start() for t in threads]
    [t.join() for t in threads]
    runner.writer.close()
    stored = logstore.read_lines(tmp_path)
    assert len(stored) == 4000
    raw = (tmp_path / logstore.PLAIN).read_bytes()
    for offset, data in published:  # byte offsets, as the offset stream publishes them
        assert raw[offset:offset + len(data)] == data
    assert sum(len(data) for _, data in published) == len(raw)
