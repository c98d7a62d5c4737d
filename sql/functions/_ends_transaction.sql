CREATE OR REPLACE FUNCTION {{ schema }}._ends_transaction(sql text)
RETURNS boolean
LANGUAGE plpgsql
IMMUTABLE
PARALLEL SAFE
{{ function_settings }}
AS $fn$
DECLARE
    chars text[];
    n integer;
    i integer := 1;
    c text;
    tag text;
    depth integer;
    escapes boolean;
    -- The statements with quoted text and comments blanked out.
    plain text := '';
    statement text;
BEGIN
    -- Only these words can end a transaction; most statements never get past this test.
    IF sql !~* '(commit|end|rollback|abort|prepare)' THEN
        RETURN false;
    END IF;
    chars := pg_catalog.string_to_array(sql, NULL);
    n := pg_catalog.cardinality(chars);
    WHILE i <= n LOOP
        c := chars[i];
        IF c = '-' AND chars[i + 1] = '-' THEN
            WHILE i <= n AND chars[i] <> E'\n' LOOP
                i := i + 1;
            END LOOP;
            plain := plain || ' ';
        ELSIF c = '/' AND chars[i + 1] = '*' THEN
            -- Block comments nest.
            depth := 1;
            i := i + 2;
            WHILE i <= n AND depth > 0 LOOP
                IF chars[i] = '/' AND chars[i + 1] = '*' THEN
                    depth := depth + 1;
                    i := i + 1;
                ELSIF chars[i] = '*' AND chars[i + 1] = '/' THEN
                    depth := depth - 1;
                    i := i + 1;
                END IF;
                i := i + 1;
            END LOOP;
            plain := plain || ' ';
            CONTINUE;
        ELSIF c = '''' OR c = '"' THEN
            -- E'...' strings also escape with a backslash.
            escapes := c = '''' AND i > 1 AND chars[i - 1] IN ('E', 'e')
                       AND (i = 2 OR chars[i - 2] !~ '[[:alnum:]_$]');
            i := i + 1;
            WHILE i <= n LOOP
                IF escapes AND chars[i] = '\' THEN
                    i := i + 2;
                ELSIF chars[i] = c AND chars[i + 1] = c THEN
                    i := i + 2;
                ELSIF chars[i] = c THEN
                    EXIT;
                ELSE
                    i := i + 1;
                END IF;
            END LOOP;
            plain := plain || ' x ';
        ELSIF c = '$' AND (i = 1 OR chars[i - 1] !~ '[[:alnum:]_$]') THEN
            tag := pg_catalog.substring(pg_catalog.array_to_string(chars[i:LEAST(n, i + 64)], ''),
                                        '^\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$');
            IF tag IS NULL THEN
                plain := plain || c;
            ELSE
                -- Skip to the closing tag.
                i := i + pg_catalog.length(tag);
                WHILE i <= n AND pg_catalog.array_to_string(
                          chars[i:i + pg_catalog.length(tag) - 1], '') <> tag LOOP
                    i := i + 1;
                END LOOP;
                i := i + pg_catalog.length(tag) - 1;
                plain := plain || ' x ';
            END IF;
        ELSE
            plain := plain || c;
        END IF;
        i := i + 1;
    END LOOP;
    FOREACH statement IN ARRAY pg_catalog.string_to_array(plain, ';') LOOP
        -- ROLLBACK TO SAVEPOINT keeps the transaction; COMMIT PREPARED and ROLLBACK PREPARED
        -- cannot run inside one.
        IF statement ~* '^\s*(commit|end|abort)\M'
           OR (statement ~* '^\s*rollback\M'
               AND statement !~* '^\s*rollback(\s+(work|transaction))?\s+to\M')
           OR statement ~* '^\s*prepare\s+transaction\M' THEN
            RETURN true;
        END IF;
    END LOOP;
    RETURN false;
END;
$fn$;
COMMENT ON FUNCTION {{ schema }}._ends_transaction(text) IS
'pgdblink_safe internal: true when one of the statements in sql (quoted text and comments '
'aside) is COMMIT, END, ROLLBACK, ABORT or PREPARE TRANSACTION';
