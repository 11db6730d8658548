"""The two-step served path of before issue 12, kept ONLY as the load test's baseline ("served old").

``coreba_baseline`` (an ensemble) = ``coreba_baseline_engine`` (Python backend + ONNX Runtime on the RAW graph,
torch-based validation) -> ``coreba_baseline_postprocess`` (Python backend: ``coreba.postprocess.postprocess``,
then :func:`coreba.answer.pack_answer`). The model files are the ones that served before, unchanged but for
their imports, so that ``python -m serving.perf`` measures old and new in one run on one machine. Nothing
else uses them; ``serving.build_repository --baseline RAW.onnx`` writes them next to the one-step models.
"""

from __future__ import annotations

from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from coreba.config import CorebaConfig
from export.spec import INPUT_NAMES, OUTPUT_NAMES
from serving.model_configs import BOOL, FP32, Batching, _input, _instances, _output, answer_outputs
from serving.spec import ANSWER_OUTPUTS, DURATION, ONNX_FILENAME

BASELINE = "coreba_baseline"  # the ensemble
BASELINE_ENGINE = "coreba_baseline_engine"
BASELINE_POSTPROCESS = "coreba_baseline_postprocess"
BASELINE_MODELS: tuple[str, ...] = (BASELINE, BASELINE_ENGINE, BASELINE_POSTPROCESS)
POSTPROCESS_INPUTS: tuple[str, ...] = (*OUTPUT_NAMES, "video_mask", "text_mask", DURATION)
HERE = Path(__file__).resolve().parent
# the batching the old path was served with: preferred 4 and 8, waiting up to 2 ms to fill them
OLD_PREFERRED_BATCH_SIZES, OLD_MAX_QUEUE_DELAY_US = (4, 8), 2000


def old_batching(max_batch_size: int) -> Batching:
    """The old path's dynamic batching, at the repository's max batch size."""
    preferred = tuple(size for size in OLD_PREFERRED_BATCH_SIZES if size <= max_batch_size) or (max_batch_size,)
    return Batching(max_batch_size, preferred, OLD_MAX_QUEUE_DELAY_US)


def engine_config(cfg: CorebaConfig, batching: Batching) -> mc.ModelConfig:
    """The raw-output engine: variable lengths, the export's tensor names."""
    dims = {"video_feats": (FP32, [-1, cfg.video_dim]), "video_mask": (BOOL, [-1]),
            "text_feats": (FP32, [-1, cfg.text_dim]), "text_mask": (BOOL, [-1])}
    outputs = {"pred_logits": [cfg.num_queries, 2], "pred_spans": [cfg.num_queries, 2], "saliency_scores": [-1]}
    config = mc.ModelConfig(name=BASELINE_ENGINE, backend="python", max_batch_size=batching.max_batch_size,
                            input=[_input(name, *dims[name]) for name in INPUT_NAMES],
                            output=[_output(name, FP32, outputs[name]) for name in OUTPUT_NAMES],
                            instance_group=_instances("cpu", 1), dynamic_batching=batching.dynamic_batching())
    for key, value in {"onnx_filename": ONNX_FILENAME, "graph_optimization": "all", "intra_op_threads": "0"}.items():
        config.parameters[key].string_value = value
    return config


def postprocess_config(cfg: CorebaConfig, batching: Batching, top_k: int) -> mc.ModelConfig:
    dims = {"pred_logits": (FP32, [cfg.num_queries, 2]), "pred_spans": (FP32, [cfg.num_queries, 2]),
            "saliency_scores": (FP32, [-1]), "video_mask": (BOOL, [-1]), "text_mask": (BOOL, [-1]),
            DURATION: (FP32, [1])}
    outputs = answer_outputs(cfg, top_k)
    outputs[1].dims[:] = [-1]  # saliency: as long as the request's clips
    return mc.ModelConfig(name=BASELINE_POSTPROCESS, backend="python", max_batch_size=batching.max_batch_size,
                          input=[_input(name, *dims[name]) for name in POSTPROCESS_INPUTS], output=outputs,
                          instance_group=_instances("cpu", 1), dynamic_batching=mc.ModelDynamicBatching())


def ensemble_config(cfg: CorebaConfig, batching: Batching, top_k: int) -> mc.ModelConfig:
    """Inputs padded to the maxima (as the one-step models), engine -> post-processing."""
    Lv, Lt = cfg.max_video_len, cfg.max_text_len
    dims = {"video_feats": (FP32, [Lv, cfg.video_dim]), "video_mask": (BOOL, [Lv]),
            "text_feats": (FP32, [Lt, cfg.text_dim]), "text_mask": (BOOL, [Lt]), DURATION: (FP32, [1])}
    config = mc.ModelConfig(name=BASELINE, platform="ensemble", max_batch_size=batching.max_batch_size,
                            input=[_input(name, *dims[name]) for name in (*INPUT_NAMES, DURATION)],
                            output=answer_outputs(cfg, top_k))
    run = config.ensemble_scheduling.step.add(model_name=BASELINE_ENGINE, model_version=-1)
    for name in INPUT_NAMES:
        run.input_map[name] = name
    for name in OUTPUT_NAMES:
        run.output_map[name] = name
    answer = config.ensemble_scheduling.step.add(model_name=BASELINE_POSTPROCESS, model_version=-1)
    for name in POSTPROCESS_INPUTS:
        answer.input_map[name] = name
    for name in ANSWER_OUTPUTS:
        answer.output_map[name] = name
    return config


def baseline_models(raw_onnx: Path, cfg: CorebaConfig, max_batch_size: int,
                    top_k: int) -> dict[str, tuple[mc.ModelConfig, dict[str, Path]]]:
    """The three baseline models, batching as the old path did: name -> (config, {file in the version folder:
    source}); ``raw_onnx`` is the RAW graph of the same model. ``serving.build_repository`` writes them (staged,
    checked and recorded in its marker like every model it writes)."""
    batching = old_batching(max_batch_size)
    return {BASELINE_ENGINE: (engine_config(cfg, batching), {"model.py": HERE / "engine_model.py",
                                                             ONNX_FILENAME: raw_onnx}),
            BASELINE_POSTPROCESS: (postprocess_config(cfg, batching, top_k),
                                   {"model.py": HERE / "postprocess_model.py"}),
            BASELINE: (ensemble_config(cfg, batching, top_k), {})}
