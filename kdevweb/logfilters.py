"""Logging filters.

Django logs a refused request (403 PermissionDenied, 400, 404) with the
exception's traceback. A refusal is the app working as designed: keep the
one-line record ("Forbidden (Permission denied): /labs/x/"), drop the
traceback, so real errors (5xx) stand out in the log.
"""

import logging


class NoTracebackForClientErrors(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        status = getattr(record, "status_code", None)
        if status is not None and 400 <= status < 500:
            record.exc_info = None
            record.exc_text = None
        return True
