"""MLflow model code of the registered LightGBM versions (``mlflow.pyfunc`` models from code):
``adapters.pyfunc_models.LgbmPyfunc``. Executed by MLflow when the model is logged or loaded."""

from mlflow.models import set_model

from levibot_pipelines.adapters.pyfunc_models import LgbmPyfunc

set_model(LgbmPyfunc())
