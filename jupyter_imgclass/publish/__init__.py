"""Publishing a trained model: portable bundles, ONNX, and the REST prediction service.

* :mod:`.bundle` -- ``export_bundle`` / ``load_model`` (safetensors + ``model.json``);
* :mod:`.onnx` -- ``export_onnx`` / ``onnx_predict`` (translated from the traced network);
* :mod:`.formats` -- int8 ONNX and OpenVINO IR made from it, each checked against the
  native model on the project's images (the agreement table);
* :mod:`.serve` -- ``create_app`` / ``serve_in_background`` / ``serve_forever`` over any
  :class:`~.serve.Servable` (a loaded bundle and a project's Iteration are both one);
* :mod:`.dockerfile` -- ``write_dockerfile``: a container serving a bundle with ``serve``.

Nothing here knows a Project: an Iteration hands itself over as a ``Servable`` and its
prediction log as a callback.
"""
