-- One database per service: no service reads another's tables.
CREATE DATABASE auth;
CREATE DATABASE films;
CREATE DATABASE mailer;
CREATE DATABASE web;
