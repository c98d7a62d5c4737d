-- Functions start out executable by PUBLIC. Nothing here is for PUBLIC: install --grant
-- gives roles USAGE on the schema and EXECUTE on its functions.
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA {{ schema }} FROM PUBLIC;
REVOKE EXECUTE ON ALL PROCEDURES IN SCHEMA {{ schema }} FROM PUBLIC;
