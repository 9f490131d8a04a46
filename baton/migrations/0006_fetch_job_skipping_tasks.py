"""baton_fetch_job_v1: procrastinate_fetch_job_v2 (Procrastinate 3.10, whose 0039
migration gave it this body) with a list of task names to pass over. A worker that meets
a task it does not have hands that job back once and then fetches through this function,
so the job goes to a worker that has the task instead of bouncing between the two.

The body is upstream.skipping_fetch_function() of the audited upstream body;
tests/unit/test_upstream_contract.py fails when the two differ.
"""

from django.db import migrations

FUNCTION = """
CREATE OR REPLACE FUNCTION baton_fetch_job_v1(
    target_queue_names character varying[],
    p_worker_id bigint,
    skip_task_names character varying[]
)
    RETURNS procrastinate_jobs
    LANGUAGE plpgsql
AS $$
DECLARE
	found_jobs procrastinate_jobs;
BEGIN
    WITH candidate AS (
        SELECT jobs.*
            FROM procrastinate_jobs AS jobs
            WHERE
                -- reject the job if its lock has earlier or higher priority jobs
                NOT EXISTS (
                    SELECT 1
                        FROM procrastinate_jobs AS other_jobs
                        WHERE
                            jobs.lock IS NOT NULL
                            AND other_jobs.lock = jobs.lock
                            AND (
                                -- job with same lock is already running
                                other_jobs.status = 'doing'
                                OR
                                -- job with same lock is waiting and has higher priority (or same priority but was queued first)
                                (
                                    other_jobs.status = 'todo'
                                    AND (
                                        other_jobs.priority > jobs.priority
                                        OR (
                                        other_jobs.priority = jobs.priority
                                        AND other_jobs.id < jobs.id
                                        )
                                    )
                                )
                            )
                )
                AND jobs.status = 'todo'
                AND (target_queue_names IS NULL OR jobs.queue_name = ANY( target_queue_names ))
                AND jobs.task_name <> ALL( skip_task_names )
                AND (jobs.scheduled_at IS NULL OR jobs.scheduled_at <= now())
            ORDER BY jobs.priority DESC, jobs.id ASC LIMIT 1
            FOR UPDATE OF jobs SKIP LOCKED
    )
    UPDATE procrastinate_jobs
        SET status = 'doing', worker_id = p_worker_id
        FROM candidate
        WHERE procrastinate_jobs.id = candidate.id
        RETURNING procrastinate_jobs.* INTO found_jobs;

 RETURN found_jobs;
END;
$$
"""


class Migration(migrations.Migration):
    dependencies = [
        ("baton", "0005_rename_step_workflowstep"),
        ("procrastinate", "0039_pre_priority_lock_fetch_job"),
    ]

    operations = [
        migrations.RunSQL(
            FUNCTION,
            reverse_sql="DROP FUNCTION IF EXISTS baton_fetch_job_v1("
            "character varying[], bigint, character varying[])",
        ),
    ]
