"""Kafka consumer group that renders one-time-code emails and sends them over SMTP."""
