-- Run once by the postgres image of deploy/cluster/docker-compose.yml on an empty data volume
-- (/docker-entrypoint-initdb.d), after it created POSTGRES_DB (levibot_dagster, the Dagster
-- instance): the MLflow tracking server's backend store. MLflow creates its tables on start.
CREATE DATABASE levibot_mlflow;
