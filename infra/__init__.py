"""Local-stack tooling: the embedded broker, the SMTP sink and the stack runner."""
