from common.migrations import run_env
from web_service.models import Base

run_env(Base.metadata)
