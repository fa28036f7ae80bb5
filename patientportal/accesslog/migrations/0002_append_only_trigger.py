"""PostgreSQL only: a trigger refuses UPDATE and DELETE on the access log and its anchors.

The one exception is the retention purge (`access_log_purge`), which sets
`accesslog.purge_through_seq` for its own transaction and may then delete access events up to
that position. TRUNCATE is not trapped (the test runner's flush uses it); the hash chain and
`accesslog_verify` catch any removal that bypasses the trigger.
"""

from django.db import migrations

FUNCTION = """
CREATE OR REPLACE FUNCTION accesslog_refuse_change() RETURNS trigger AS $$
DECLARE
    purge_through text := current_setting('accesslog.purge_through_seq', true);
BEGIN
    IF TG_OP = 'DELETE' AND TG_TABLE_NAME = 'accesslog_accessevent'
            AND coalesce(purge_through, '') <> '' THEN
        IF OLD.seq <= purge_through::bigint THEN
            RETURN OLD;
        END IF;
    END IF;
    RAISE EXCEPTION 'the access log is append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
"""

TRIGGERS = """
CREATE TRIGGER accesslog_accessevent_append_only
    BEFORE UPDATE OR DELETE ON accesslog_accessevent
    FOR EACH ROW EXECUTE FUNCTION accesslog_refuse_change();
CREATE TRIGGER accesslog_anchor_append_only
    BEFORE UPDATE OR DELETE ON accesslog_accessloganchor
    FOR EACH ROW EXECUTE FUNCTION accesslog_refuse_change();
"""

DROP = """
DROP TRIGGER IF EXISTS accesslog_accessevent_append_only ON accesslog_accessevent;
DROP TRIGGER IF EXISTS accesslog_anchor_append_only ON accesslog_accessloganchor;
DROP FUNCTION IF EXISTS accesslog_refuse_change();
"""


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(FUNCTION, params=None)
    schema_editor.execute(TRIGGERS, params=None)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(DROP, params=None)


class Migration(migrations.Migration):
    dependencies = [("accesslog", "0001_initial")]

    operations = [migrations.RunPython(create, drop)]
