-- One database per service, each owned by a role of its own that can connect to nothing
-- else: a compromised service reads no other's tables (auth's password hashes, say).
-- Run once by the postgres image, as the superuser, at its first start; the roles'
-- passwords come from its environment (docker-compose.yml), never from this file. One
-- that is not set leaves `:'password'` unreplaced, an error that stops the script.
\set ON_ERROR_STOP on

\unset password
\getenv password POSTGRES_AUTH_PASSWORD
CREATE ROLE auth LOGIN PASSWORD :'password';
CREATE DATABASE auth OWNER auth;
REVOKE ALL ON DATABASE auth FROM PUBLIC;

\unset password
\getenv password POSTGRES_FILMS_PASSWORD
CREATE ROLE films LOGIN PASSWORD :'password';
CREATE DATABASE films OWNER films;
REVOKE ALL ON DATABASE films FROM PUBLIC;

\unset password
\getenv password POSTGRES_MAILER_PASSWORD
CREATE ROLE mailer LOGIN PASSWORD :'password';
CREATE DATABASE mailer OWNER mailer;
REVOKE ALL ON DATABASE mailer FROM PUBLIC;

\unset password
\getenv password POSTGRES_WEB_PASSWORD
CREATE ROLE web LOGIN PASSWORD :'password';
CREATE DATABASE web OWNER web;
REVOKE ALL ON DATABASE web FROM PUBLIC;
