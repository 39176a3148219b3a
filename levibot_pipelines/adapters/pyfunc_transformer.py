"""MLflow model code of the registered Transformer versions (``mlflow.pyfunc`` models from code):
``adapters.pyfunc_models.TransformerPyfunc``. Executed by MLflow when the model is logged or
loaded."""

from mlflow.models import set_model

from levibot_pipelines.adapters.pyfunc_models import TransformerPyfunc

set_model(TransformerPyfunc())
