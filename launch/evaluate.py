"""Verification on held-out identities (and LFW / IJB protocols) for a backbone.

Evaluates `<workdir>/backbone` (written by launch.pretrain and launch.fedface):
  python -m launch.evaluate --config experiments/pretrain_celeba.py \
      --workdir runs/celeba/pretrain
  # A published model instead of <workdir>/backbone (config.model.pretrained), with 95% CIs from a
  # bootstrap over the evaluation identities:
  python -m launch.evaluate --config experiments/eval_celeba_dlib.py \
      --workdir runs/celeba/dlib --num_resamples=1000
  # LFW 10-fold with a pairs.txt and an image tree:
  python -m launch.evaluate --config experiments/pretrain_celeba.py --workdir ... \
      --lfw_pairs /data/lfw/pairs.txt --lfw_root /data/lfw
"""

import json
import os
import time

from absl import flags

from launch import common

common.define_flags("experiments/pretrain_synthetic.py")
flags.DEFINE_string("split", "evaluation", "Identity split to evaluate on.")
flags.DEFINE_string("lfw_pairs", None, "Optional LFW pairs.txt.")
flags.DEFINE_string("lfw_root", None, "Image root for --lfw_pairs.")
flags.DEFINE_string("name", "evaluate", "Name of the JSON/PNG outputs.")
flags.DEFINE_integer("num_resamples", 0,
                     "If > 0, also 95% CIs from this many bootstrap resamples of the identities.")
common.define_results_md_flag()
flags.mark_flags_as_required(["workdir"])
FLAGS = flags.FLAGS


def main(argv):
  del argv
  common.setup_runtime()
  # pylint: disable=g-import-not-at-top
  import jax
  from fedface_jax import checkpoint as ckpt_lib
  from fedface_jax import data as data_lib
  from fedface_jax import evaluation
  from fedface_jax import models
  from fedface_jax.evaluation import api as eval_api
  from fedface_jax.evaluation import bootstrap
  from fedface_jax.evaluation import embeddings as embeddings_lib
  from reporting import results_md
  # pylint: enable=g-import-not-at-top
  config = FLAGS.config
  splits = data_lib.load_splits(config)
  model = models.from_config(config.model)
  faces = splits[FLAGS.split]
  pretrained = config.model.get("pretrained", "")
  if pretrained:  # a published model's weights, not a backbone trained here
    params = models.load_pretrained_params(pretrained, model)
  else:
    params = ckpt_lib.load_backbone(model, faces.image_shape,
                                    os.path.join(FLAGS.workdir, "backbone"))
  embed_fn = evaluation.make_embed_fn(model, params)
  out_dir = os.path.join(FLAGS.workdir, "eval")
  t0 = time.time()
  emb = embeddings_lib.compute_embeddings(embed_fn, faces.images, flip=config.eval.flip,
                                          mode="sum", desc=FLAGS.name)
  report = eval_api.evaluate_embeddings(
      emb, faces.labels, num_impostor_pairs=config.eval.num_impostor_pairs, seed=config.seed,
      fars=tuple(config.eval.fars), out_dir=out_dir, name=FLAGS.name,
      extra={"flip": config.eval.flip, "embed_seconds": time.time() - t0})
  rows = {f"{FLAGS.split} identities": report}
  if FLAGS.lfw_pairs:
    rows["LFW"] = eval_api.evaluate_lfw(embed_fn, FLAGS.lfw_pairs, FLAGS.lfw_root,
                                        image_size=faces.image_shape[:2],
                                        flip=config.eval.flip)
  table = eval_api.format_results_table(rows)
  if FLAGS.num_resamples > 0:
    ci = bootstrap.bootstrap_verification(
        emb, faces.labels, fars=bootstrap.DEFAULT_FARS, num_resamples=FLAGS.num_resamples,
        seed=config.seed, num_impostor_pairs=config.eval.num_impostor_pairs)
    table += "\n\n" + "\n".join(
        f"{name}: {s['mean']:.4g} [{s['ci_low']:.4g}, {s['ci_high']:.4g}]"
        for name, s in ci.items())
    table += (f"\n(mean [95% CI], bootstrap over {faces.num_identities} identities, "
              f"{FLAGS.num_resamples} resamples; TAR in %)")
  print(table)
  print(json.dumps({"out_dir": out_dir}))
  if FLAGS.results_md_key and jax.process_index() == 0:
    variant = f"pretrained {pretrained}" if pretrained else f"{FLAGS.workdir}/backbone"
    if FLAGS.num_resamples > 0:   # the block's machine-readable twin, results/<key>.json
      results_md.write_results_json("results", FLAGS.results_md_key, common.invocation(
          "launch.evaluate"), [{"method": "pretrained", "variant": variant, "seeds": 1,
                                "metrics": ci}], note=f"{faces.num_identities} identities")
    section = results_md.section(
        f"{FLAGS.results_md_key}: {variant} on {FLAGS.split} identities",
        common.invocation("launch.evaluate"), table,
        (f"Identities: {faces.num_identities}, images: {len(faces.labels)}",))
    results_md.update_results_md("RESULTS.md", FLAGS.results_md_key, section)


if __name__ == "__main__":
  common.run(main)
