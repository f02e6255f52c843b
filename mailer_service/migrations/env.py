from common.migrations import run_env
from mailer_service.models import Base

run_env(Base.metadata)
