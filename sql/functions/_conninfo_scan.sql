CREATE OR REPLACE FUNCTION {{ schema }}._conninfo_scan(
    target text, libpq_major integer DEFAULT 18
)
RETURNS text[]
LANGUAGE plpgsql
IMMUTABLE
STRICT
PARALLEL SAFE
{{ function_settings }}
AS $fn$
DECLARE
    -- The rules are those of libpq's fe-connect.c: a URI iff the string starts with exactly
    -- postgresql:// or postgres:// (case-sensitive, no leading blank; anything else is
    -- key/value, so " postgresql://..." is an error), conninfo_parse for key/value,
    -- conninfo_uri_parse_options and _params for URIs, conninfo_storeval for keywords.
    -- Every string libpq rejects raises 22023 with a fixed message that quotes no input.
    -- The result has one (keyword, decoded value, raw text as written, kind) per occurrence,
    -- in order; kind is '' (plain), 'secret' (the value of a secret keyword), 'tainted' (a URI
    -- component that swallowed part of an unencoded password) or 'suspect' (keyword
    -- '#suspect': what was probably meant as that password).
    --
    -- One key/value pair as conninfo_parse reads it: blanks, a name (no blank, no '='),
    -- blanks, '=', blanks, then a value: single-quoted (backslash escapes any character,
    -- must be closed), or unquoted (not starting with a quote; backslash escapes any
    -- character; ends at a blank; a lone backslash at the very end is dropped), or empty at
    -- the end of the string; then blanks. Blanks are C isspace() in ASCII.
    kv_re constant text :=
        '([ \t\n\r\f\v]*([^= \t\n\r\f\v]*)[ \t\n\r\f\v]*=[ \t\n\r\f\v]*'
        '(''((?:[^''\\]|\\.)*)'''
        '|(?:[^'' \t\n\r\f\v\\]|\\.)(?:[^ \t\n\r\f\v\\]|\\.)*(?:\\$)?'
        '|(?:\\$)?)'
        '[ \t\n\r\f\v]*)';
    -- Keywords libpq 14 to 18 accept (PQconninfoOptions), plus requiressl (see
    -- conninfo_storeval). One newer than the running libpq passes here and is rejected by
    -- dblink_connect itself, whose message names only the keyword.
    keywords constant text[] := ARRAY[
        'service', 'user', 'password', 'passfile', 'channel_binding', 'connect_timeout',
        'dbname', 'host', 'hostaddr', 'port', 'client_encoding', 'options',
        'application_name', 'fallback_application_name', 'keepalives', 'keepalives_idle',
        'keepalives_interval', 'keepalives_count', 'tcp_user_timeout', 'sslmode',
        'sslnegotiation', 'sslcompression', 'sslcert', 'sslkey', 'sslcertmode', 'sslpassword',
        'sslrootcert', 'sslcrl', 'sslcrldir', 'sslsni', 'requirepeer', 'require_auth',
        'min_protocol_version', 'max_protocol_version', 'ssl_min_protocol_version',
        'ssl_max_protocol_version', 'gssencmode', 'krbsrvname', 'gsslib', 'gssdelegation',
        'replication', 'target_session_attrs', 'load_balance_hosts', 'scram_client_key',
        'scram_server_key', 'oauth_issuer', 'oauth_client_id', 'oauth_client_secret',
        'oauth_scope', 'sslkeylogfile', 'requiressl']::text[];
    -- libpq's password fields (dispchar "*": password, sslpassword, oauth_client_secret) and
    -- libpq 18's SCRAM keys (a ClientKey authenticates as the user just like the password).
    -- passfile, sslkey and sslcert name files; they are not secrets.
    secret_kw constant text[] := ARRAY['password', 'sslpassword', 'oauth_client_secret',
        'scram_client_key', 'scram_server_key']::text[];
    bad constant text := 'invalid connection string: ';
    -- libpq 18 trims blanks around each URI component and rejects blanks inside one;
    -- older versions keep them verbatim.
    trim_sp constant boolean := libpq_major >= 18;
    out text[] := '{}'::text[];
    m text[];
    covered integer := 0;
    kw text;
    val text;
    raw text;
    plen integer;
    s text;
    i integer;
    j integer;
    p integer;
    c text;
    rest_start integer;
    user_raw text;
    pw_raw text;
    host text;
    port text;
    hostbuf text := '';
    portbuf text := '';
    hosts_end integer;
    db_raw text;
    db_start integer;
    region_end integer;
    region text;
    last_at integer;
    colon integer;
    sus_raw text;
    host_kind text := '';
    db_kind text := '';
    params text[];
    n integer;
BEGIN
    plen := CASE
        WHEN pg_catalog.left(target, 13) = 'postgresql://' THEN 13
        WHEN pg_catalog.left(target, 11) = 'postgres://' THEN 11
        ELSE 0
    END;

    IF plen = 0 THEN
        -- Key/value form. The common shape first: no quote, no backslash, no blank next to
        -- '='; then every blank-separated token is one keyword=value ('=' may follow).
        IF target !~ '[''\\]|[ \t\n\r\f\v]=|=[ \t\n\r\f\v]' THEN
            -- The vertical tab as \x0B: PostgreSQL 15 reads E'\v' as a plain v.
            s := pg_catalog.btrim(target, E' \t\n\r\f\x0B');
            IF s = '' THEN
                RETURN out;
            END IF;
            FOREACH raw IN ARRAY CASE
                    WHEN s ~ '[\t\n\r\f\v]|  '
                        THEN pg_catalog.regexp_split_to_array(s, '[ \t\n\r\f\v]+')
                    ELSE pg_catalog.string_to_array(s, ' ')     -- single blanks: cheaper
                END LOOP
                j := pg_catalog.strpos(raw, '=');
                kw := pg_catalog.left(raw, j - 1);
                IF j = 0 OR NOT kw = ANY (keywords) THEN
                    RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = bad || CASE WHEN j = 0
                        THEN 'missing "=" after a keyword, or unterminated quoted string'
                        ELSE 'invalid connection option' END;
                END IF;
                val := pg_catalog.substr(raw, j + 1);
                IF kw = 'requiressl' THEN
                    kw := 'sslmode';
                    val := CASE WHEN pg_catalog.left(val, 1) = '1' THEN 'require' ELSE 'prefer' END;
                END IF;
                out := out || ARRAY[kw, val, pg_catalog.substr(raw, j + 1),
                                    CASE WHEN kw = ANY (secret_kw) THEN 'secret' ELSE '' END];
            END LOOP;
            RETURN out;
        END IF;
        -- General case: one regular expression match per pair, which must cover the string.
        FOR m IN SELECT r FROM pg_catalog.regexp_matches(target, kv_re, 'g') AS r LOOP
            covered := covered + pg_catalog.length(m[1]);
            kw := m[2];
            IF m[4] IS NOT NULL THEN
                raw := m[4];
                val := CASE WHEN pg_catalog.strpos(raw, '\') = 0 THEN raw
                            ELSE pg_catalog.regexp_replace(raw, '\\(.)', '\1', 'g') END;
            ELSE
                raw := m[3];
                val := CASE WHEN pg_catalog.strpos(raw, '\') = 0 THEN raw
                            ELSE pg_catalog.regexp_replace(raw, '\\(.|$)', '\1', 'g') END;
            END IF;
            IF NOT kw = ANY (keywords) THEN
                RAISE EXCEPTION USING ERRCODE = '22023',
                    MESSAGE = bad || 'invalid connection option';
            END IF;
            IF kw = 'requiressl' THEN
                kw := 'sslmode';
                val := CASE WHEN pg_catalog.left(val, 1) = '1' THEN 'require' ELSE 'prefer' END;
            END IF;
            out := out || ARRAY[kw, val, raw,
                                CASE WHEN kw = ANY (secret_kw) THEN 'secret' ELSE '' END];
        END LOOP;
        IF covered <> pg_catalog.length(target)
           AND target !~ '^[ \t\n\r\f\v]*$' THEN
            RAISE EXCEPTION USING ERRCODE = '22023',
                MESSAGE = bad || 'missing "=" after a keyword, or unterminated quoted string';
        END IF;
        RETURN out;
    END IF;

    -- URI form.
    s := pg_catalog.substr(target, plen + 1);

    -- userinfo: look ahead for the first '@' or '/'; only an '@' that comes first ends a
    -- userinfo. The user name runs to the first ':', the password from there to that '@'.
    i := pg_catalog.length(pg_catalog.substring(s, '^[^@/]*'));
    IF pg_catalog.substr(s, i + 1, 1) = '@' THEN
        j := pg_catalog.strpos(pg_catalog.left(s, i), ':');
        IF j = 0 THEN
            user_raw := pg_catalog.left(s, i);
        ELSE
            user_raw := pg_catalog.left(s, j - 1);
            pw_raw := pg_catalog.substr(s, j + 1, i - j);
        END IF;
        rest_start := i + 2;
    ELSE
        rest_start := 1;
    END IF;

    -- host[:port] list, separated by ','; [IPv6] in brackets
    p := rest_start;
    LOOP
        IF pg_catalog.substr(s, p, 1) = '[' THEN
            j := pg_catalog.strpos(pg_catalog.substr(s, p + 1), ']');
            IF j = 0 THEN
                RAISE EXCEPTION USING ERRCODE = '22023',
                    MESSAGE = bad || 'missing "]" after an IPv6 host address';
            END IF;
            IF j = 1 THEN
                RAISE EXCEPTION USING ERRCODE = '22023',
                    MESSAGE = bad || 'empty IPv6 host address';
            END IF;
            host := pg_catalog.substr(s, p + 1, j - 1);
            p := p + j + 1;
            c := pg_catalog.substr(s, p, 1);
            IF c <> '' AND c <> ':' AND c <> '/' AND c <> '?' AND c <> ',' THEN
                RAISE EXCEPTION USING ERRCODE = '22023',
                    MESSAGE = bad || 'unexpected character after an IPv6 host address';
            END IF;
        ELSE
            host := pg_catalog.substring(pg_catalog.substr(s, p), '^[^:/?,]*');
            p := p + pg_catalog.length(host);
            c := pg_catalog.substr(s, p, 1);
        END IF;
        hostbuf := hostbuf || host;
        IF c = ':' THEN
            port := pg_catalog.substring(pg_catalog.substr(s, p + 1), '^[^/?,]*');
            portbuf := portbuf || port;
            p := p + 1 + pg_catalog.length(port);
            c := pg_catalog.substr(s, p, 1);
        END IF;
        EXIT WHEN c <> ',';
        p := p + 1;
        hostbuf := hostbuf || ',';
        portbuf := portbuf || ',';
    END LOOP;
    hosts_end := p;

    -- /dbname up to '?'
    db_start := p + 1;
    IF c = '/' THEN
        db_raw := pg_catalog.substring(pg_catalog.substr(s, p + 1), '^[^?]*');
        p := p + 1 + pg_catalog.length(db_raw);
        c := pg_catalog.substr(s, p, 1);
    END IF;
    region_end := p;

    -- An '@' in host, port or dbname means libpq split an unencoded password: '@' in the
    -- password ends the userinfo early, '/' before the '@' hides the userinfo altogether.
    -- libpq accepts such a URI; what was probably meant as the password (from the first ':'
    -- to the last '@' before the query) is kept as a suspect (keyword '#suspect'), and the
    -- components it spilled into are tainted, so that masking hides them too.
    region := pg_catalog.substr(s, rest_start, region_end - rest_start);
    IF pg_catalog.strpos(region, '@') > 0 THEN
        last_at := rest_start - 1 + pg_catalog.length(region)
                   - pg_catalog.strpos(pg_catalog.reverse(region), '@') + 1;
        colon := pg_catalog.strpos(s, ':');
        IF colon > 0 AND colon < last_at THEN
            sus_raw := pg_catalog.substr(s, colon + 1, last_at - colon - 1);
            IF colon + 1 < hosts_end AND last_at > rest_start THEN
                host_kind := 'tainted';
            END IF;
            IF db_raw IS NOT NULL AND last_at > db_start THEN
                db_kind := 'tainted';
            END IF;
        END IF;
    END IF;

    -- Each component is decoded only when it needs it: a function call costs more than the
    -- two tests.
    IF user_raw <> '' THEN
        out := out || ARRAY['user',
            CASE WHEN pg_catalog.strpos(user_raw, '%') > 0
                      OR (trim_sp AND pg_catalog.strpos(user_raw, ' ') > 0)
                 THEN {{ schema }}._conninfo_decode(user_raw, true, trim_sp)
                 ELSE user_raw END,
            user_raw, ''];
    END IF;
    IF pw_raw <> '' THEN
        out := out || ARRAY['password',
            CASE WHEN pg_catalog.strpos(pw_raw, '%') > 0
                      OR (trim_sp AND pg_catalog.strpos(pw_raw, ' ') > 0)
                 THEN {{ schema }}._conninfo_decode(pw_raw, true, trim_sp)
                 ELSE pw_raw END,
            pw_raw, 'secret'];
    END IF;
    IF hostbuf <> '' THEN
        out := out || ARRAY['host',
            CASE WHEN pg_catalog.strpos(hostbuf, '%') > 0
                      OR (trim_sp AND pg_catalog.strpos(hostbuf, ' ') > 0)
                 THEN {{ schema }}._conninfo_decode(hostbuf, true, trim_sp)
                 ELSE hostbuf END,
            hostbuf, host_kind];
    END IF;
    IF portbuf <> '' THEN
        out := out || ARRAY['port',
            CASE WHEN pg_catalog.strpos(portbuf, '%') > 0
                      OR (trim_sp AND pg_catalog.strpos(portbuf, ' ') > 0)
                 THEN {{ schema }}._conninfo_decode(portbuf, true, trim_sp)
                 ELSE portbuf END,
            portbuf, host_kind];
    END IF;
    IF db_raw <> '' THEN
        out := out || ARRAY['dbname',
            CASE WHEN pg_catalog.strpos(db_raw, '%') > 0
                      OR (trim_sp AND pg_catalog.strpos(db_raw, ' ') > 0)
                 THEN {{ schema }}._conninfo_decode(db_raw, true, trim_sp)
                 ELSE db_raw END,
            db_raw, db_kind];
    END IF;
    IF sus_raw IS NOT NULL THEN
        out := out || ARRAY['#suspect', {{ schema }}._conninfo_decode(sus_raw, false), sus_raw,
                            'suspect'];
    END IF;

    -- ?keyword=value&...: each parameter needs exactly one '='; both sides are
    -- percent-decoded; ssl=true means sslmode=require; unknown keywords are errors.
    IF c = '?' THEN
        params := pg_catalog.string_to_array(pg_catalog.substr(s, p + 1), '&');
        n := pg_catalog.cardinality(params);
        FOR q IN 1 .. n LOOP
            raw := params[q];
            EXIT WHEN raw = '' AND q = n;       -- a trailing '&' ends the list
            j := pg_catalog.strpos(raw, '=');
            IF j = 0 THEN
                RAISE EXCEPTION USING ERRCODE = '22023',
                    MESSAGE = bad || 'missing "=" in a URI query parameter';
            END IF;
            kw := pg_catalog.left(raw, j - 1);
            raw := pg_catalog.substr(raw, j + 1);
            IF pg_catalog.strpos(raw, '=') > 0 THEN
                RAISE EXCEPTION USING ERRCODE = '22023',
                    MESSAGE = bad || 'extra "=" in a URI query parameter';
            END IF;
            kw := CASE WHEN pg_catalog.strpos(kw, '%') > 0
                            OR (trim_sp AND pg_catalog.strpos(kw, ' ') > 0)
                       THEN {{ schema }}._conninfo_decode(kw, true, trim_sp)
                       ELSE kw END;
            val := CASE WHEN pg_catalog.strpos(raw, '%') > 0
                             OR (trim_sp AND pg_catalog.strpos(raw, ' ') > 0)
                        THEN {{ schema }}._conninfo_decode(raw, true, trim_sp)
                        ELSE raw END;
            IF val IS NULL AND kw = 'requiressl' THEN
                -- requiressl keeps only whether the decoded value starts with '1', so bytes
                -- that are not text do not matter there
                val := CASE WHEN trim_sp THEN pg_catalog.btrim(raw, ' ') ELSE raw END;
                val := CASE WHEN val ~ '^(1|%31)' THEN '1' ELSE '0' END;
            END IF;
            IF kw = 'ssl' AND val = 'true' THEN
                kw := 'sslmode';
                val := 'require';
            END IF;
            IF kw IS NULL OR NOT kw = ANY (keywords) THEN     -- NULL: bytes that are not text
                RAISE EXCEPTION USING ERRCODE = '22023',
                    MESSAGE = bad || 'invalid URI query parameter';
            END IF;
            IF kw = 'requiressl' THEN
                kw := 'sslmode';
                val := CASE WHEN pg_catalog.left(val, 1) = '1' THEN 'require' ELSE 'prefer' END;
            END IF;
            out := out || ARRAY[kw, val, raw,
                                CASE WHEN kw = ANY (secret_kw) THEN 'secret' ELSE '' END];
        END LOOP;
    END IF;
    RETURN out;
END;
$fn$;
COMMENT ON FUNCTION {{ schema }}._conninfo_scan(text, integer) IS
'pgdblink_safe internal: every keyword occurrence of a libpq connection string as '
'(keyword, value, raw, kind) quadruples, parsed by libpq''s rules';
