from django.db import migrations, models

# Every committed transition of a baton step into "completed" leaves a row, in the same
# transaction: a crash can never separate the completion from its record.
CREATE_TRIGGER = """
CREATE FUNCTION testapp_record_completion() RETURNS trigger AS $$
BEGIN
    INSERT INTO testapp_completion (step_id, workflow_id, step, attempt, job_id)
    VALUES (NEW.id, NEW.workflow_id, NEW.name, NEW.attempt, NEW.job_id);
    RETURN NEW;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER testapp_record_completion
    AFTER UPDATE OF state ON baton_step
    FOR EACH ROW
    WHEN (NEW.state = 'completed' AND OLD.state IS DISTINCT FROM 'completed')
    EXECUTE FUNCTION testapp_record_completion();
"""

DROP_TRIGGER = """
DROP TRIGGER IF EXISTS testapp_record_completion ON baton_step;
DROP FUNCTION IF EXISTS testapp_record_completion();
"""


class Migration(migrations.Migration):
    dependencies = [
        ("testapp", "0001_initial"),
        ("baton", "0001_initial"),
    ]

    operations = [
        migrations.CreateModel(
            name="Completion",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("step_id", models.BigIntegerField()),
                ("workflow_id", models.UUIDField()),
                ("step", models.CharField(max_length=255)),
                ("attempt", models.IntegerField()),
                ("job_id", models.BigIntegerField(null=True)),
            ],
        ),
        migrations.RunSQL(CREATE_TRIGGER, DROP_TRIGGER),
    ]
