"""The small package the three services share: the event contract, Kafka set-up,
token verification and the HTTP edge (JSON errors, body limits, health, metrics)."""
