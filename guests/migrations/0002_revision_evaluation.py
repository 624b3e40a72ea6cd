from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("guests", "0001_initial"),
    ]

    operations = [
        # Existing revisions were never evaluated: "" ("not evaluated"), not pending.
        migrations.AddField(
            model_name="revision",
            name="eval_status",
            field=models.CharField(blank=True, choices=[("", "not evaluated"), ("pending", "evaluating"),
                                                        ("ok", "evaluates"), ("error", "does not evaluate")],
                                   default="", max_length=8),
        ),
        migrations.AlterField(
            model_name="revision",
            name="eval_status",
            field=models.CharField(blank=True, choices=[("", "not evaluated"), ("pending", "evaluating"),
                                                        ("ok", "evaluates"), ("error", "does not evaluate")],
                                   default="pending", max_length=8),
        ),
        migrations.AddField(
            model_name="revision",
            name="eval_error",
            field=models.TextField(blank=True),
        ),
        migrations.AddField(
            model_name="revision",
            name="eval_drv_path",
            field=models.CharField(blank=True, max_length=300),
        ),
        migrations.AddField(
            model_name="revision",
            name="eval_finished",
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
