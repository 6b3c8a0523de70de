-- Second database for Tiled's authentication store (principals, API keys); the catalog database
-- (POSTGRES_DB=tiled_catalog) is created by the postgres image itself.
CREATE DATABASE tiled_authn OWNER tiled;
