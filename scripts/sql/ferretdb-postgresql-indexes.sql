-- Makes FerretDB 1.24's indexes usable on its PostgreSQL backend (applied by scripts/services.sh to
-- the `ferretdb` database on every start; idempotent).
--
-- FerretDB pushes an equality filter `{field: value}` down as `_jsonb->'field' @> '<value>'`, but the
-- index it creates for `createIndex({field: 1})` (and for `_id`) is a btree on `_jsonb->'field'`,
-- which cannot answer `@>`: every such read, update and delete is a sequential scan. A GIN
-- `jsonb_path_ops` index on the same expression can (measured: `findOne({_id})` at 100k documents
-- goes from ~60 ms to ~2 ms). So every single-field btree index FerretDB creates gets a GIN twin,
-- through an event trigger; the application keeps declaring indexes the MongoDB way.
-- A non-unique btree is then emptied (rebuilt under its own name with `WHERE false`, which FerretDB's
-- metadata still finds): nothing FerretDB asks can use it, and a btree holds a whole array value in
-- one entry, so an array field (e.g. the profile ids of a batch of events) would overflow its 2.7 kB
-- row limit. Unique btrees (`_id`) stay: they enforce uniqueness.
-- (`plan_cache_mode = force_custom_plan`, set in the server configuration, makes PostgreSQL plan
-- each statement with the field name known, which the index match needs.)

SET client_min_messages = warning;

CREATE OR REPLACE FUNCTION public.dmp_add_gin_twin(index_oid oid) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  r record;
BEGIN
  SELECT am.amname, i.indnatts, i.indisunique, i.indpred IS NOT NULL AS partial, pg_get_expr(i.indexprs, i.indrelid) AS expr,
         c.relname AS index_name, t.relname AS table_name, n.nspname AS schema_name
    INTO r
    FROM pg_index i
    JOIN pg_class c ON c.oid = i.indexrelid
    JOIN pg_am am ON am.oid = c.relam
    JOIN pg_class t ON t.oid = i.indrelid
    JOIN pg_namespace n ON n.oid = t.relnamespace
   WHERE i.indexrelid = index_oid;
  IF NOT FOUND OR r.amname <> 'btree' OR r.indnatts <> 1 OR r.expr IS NULL OR r.partial
     OR r.expr !~ '^\(?_jsonb -> ''[^'']+''::text\)?$'
     OR r.table_name = '_ferretdb_database_metadata' THEN
    RETURN;
  END IF;
  -- Only tables of FerretDB databases (schemas holding its metadata table).
  IF NOT EXISTS (SELECT 1 FROM pg_class mc JOIN pg_namespace mn ON mn.oid = mc.relnamespace
                  WHERE mn.nspname = r.schema_name AND mc.relname = '_ferretdb_database_metadata') THEN
    RETURN;
  END IF;
  EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %I.%I USING gin ((%s) jsonb_path_ops)',
                 left(r.index_name, 59) || '_gin', r.schema_name, r.table_name, r.expr);
  IF NOT r.indisunique THEN
    EXECUTE format('DROP INDEX %I.%I', r.schema_name, r.index_name);
    EXECUTE format('CREATE INDEX %I ON %I.%I ((%s)) WHERE false', r.index_name, r.schema_name, r.table_name, r.expr);
  END IF;
END
$$;

CREATE OR REPLACE FUNCTION public.dmp_gin_twin_trigger() RETURNS event_trigger
LANGUAGE plpgsql AS $$
DECLARE
  cmd record;
BEGIN
  FOR cmd IN SELECT objid FROM pg_event_trigger_ddl_commands()
              WHERE command_tag = 'CREATE INDEX' AND object_type = 'index' LOOP
    PERFORM public.dmp_add_gin_twin(cmd.objid);
  END LOOP;
END
$$;

DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = 'dmp_gin_twin') THEN
    CREATE EVENT TRIGGER dmp_gin_twin ON ddl_command_end WHEN TAG IN ('CREATE INDEX')
      EXECUTE FUNCTION public.dmp_gin_twin_trigger();
  END IF;
END
$$;

-- Indexes created before the trigger existed get their twins now.
SELECT public.dmp_add_gin_twin(i.indexrelid)
  FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam
 WHERE am.amname = 'btree' AND i.indnatts = 1 AND i.indexprs IS NOT NULL;
