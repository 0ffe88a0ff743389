"""A peer attack on the same update: breaching's Inverting Gradients next to our attack.

  python -m launch.attack_peer --suite=synthetic --seeds=0,1,2 --iterations=200 \
      --peer_iterations=200,1000,3000 --ig_iterations=200,1000,3000
  python -m launch.attack_peer --suite=celeba --seeds=0,1,2   # real faces: numbers only

Needs the breaching venv (scripts/peers/README.md: `bash scripts/setup_peer_venvs.sh breaching`)
and the suite's pretrained backbone (synthetic: runs/demo/pretrain from `make demo`). For each seed:
our honest round and attack at the attack sweeps' base point, the case written as an .npz under
--workdir, breaching's attack on it in its venv (after checking that its torch LeNet reproduces our
logits and our round's update), both scored by our metrics and judges. --ig_iterations adds our
own Inverting Gradients with breaching's settings on the same update: the same-algorithm row.
Writes RESULTS.md's `attack-peer-breaching` block and results/attack-peer-breaching.json (celeba:
`-celeba` suffix; numbers only, the cases and reconstructions stay under --workdir).
"""

from absl import flags

from launch import _attack_flags

_attack_flags.define_suite("attack_peer", "Per-seed cases and outputs")
_attack_flags.define_results("results/attack-peer-breaching*.json")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds (participants, round seed, attack init).")
flags.DEFINE_integer("iterations", 200, "Our attack's iterations (paper_faithful, Adam).")
flags.DEFINE_list("peer_iterations", ["200"], "breaching's max_iterations (one run each).")
flags.DEFINE_list("ig_iterations", [], "Our own Inverting Gradients (breaching's settings) at "
                  "these iterations on the same update: the same-algorithm row.")
flags.DEFINE_enum("judge", "", ["", "model", "dlib", "both"], "Identity judge ('' = suite's).")
flags.DEFINE_string("peer_python", None, "The breaching venv's python.")
flags.DEFINE_integer("threads", 1, "torch threads of the peer.")
flags.DEFINE_bool("reuse", False, "Run nothing: rewrite the block and its JSON from the last "
                  "run's --workdir/result.json (after a change of the block's layout).")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  # pylint: disable=g-import-not-at-top
  from launch import common
  from reporting import attack_peer
  # pylint: enable=g-import-not-at-top
  common.quiet_library_logs()
  workdir = _attack_flags.suite_workdir("attack_peer")
  if FLAGS.reuse:
    result = attack_peer.load_result(workdir)
    print(attack_peer.markdown_section(result))
    if FLAGS.update_results_md:
      print("wrote", attack_peer.write_block(result, FLAGS.results_dir))
    return
  result = attack_peer.run(
      FLAGS.suite, tuple(int(s) for s in FLAGS.seeds), workdir,
      common.invocation("launch.attack_peer"), iterations=FLAGS.iterations,
      peer_iterations=tuple(int(i) for i in FLAGS.peer_iterations),
      ig_iterations=tuple(int(i) for i in FLAGS.ig_iterations),
      pretrained=FLAGS.pretrained, judge=FLAGS.judge,
      peer_python=FLAGS.peer_python or attack_peer.DEFAULT_PEER_PYTHON, threads=FLAGS.threads)
  print(attack_peer.markdown_section(result))
  attack_peer.save_result(result, workdir)
  if FLAGS.update_results_md:
    print("wrote", attack_peer.write_block(result, FLAGS.results_dir))


if __name__ == "__main__":
  from launch import common  # pylint: disable=g-import-not-at-top
  common.run(main)
