from common.migrations import run_env
from films_service.models import Base

run_env(Base.metadata)
