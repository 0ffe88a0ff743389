"""Flower side of the throughput benchmark: the shared workload in Flower's simulation engine.

Why this script exists: our engine's client-updates/s only means something next to a peer
framework running the same workload. This runs `fedface_jax/benchmark/workload.py`'s workload
(same CNN, same data, same positive-only loss, same SGD steps, same FedAvg weights) as a stock
Flower app: a message-API `ClientApp` training a PyTorch model, a `ServerApp` running
`flwr.serverapp.strategy.FedAvg.start`, launched with `flwr.simulation.run_simulation` on the Ray
backend (one virtual SuperNode per client; `--cpus-per-client` CPUs each, so on 2 cores 2 Ray
actors run ClientApps concurrently).

Round times come from `FedAvg.start`'s `evaluate_fn` hook, which the strategy calls before the
first round and after every round (federated evaluation is off: `fraction_evaluate=0`).

`--engine inprocess` is a labelled fallback for machines where Ray cannot start: the same
`ClientApp` object is called sequentially in this process (no Ray, no actors) and its replies
are aggregated with the same `FedAvg.aggregate_train`. It is NOT Flower's simulation engine.

It runs in `.peer_venvs/flower` (scripts/setup_peer_venvs.sh) and cannot import fedface_jax,
so `_common.py` (shared with the other peer) re-implements `synthetic_client_data` /
`init_flat_params` (NumPy only). `--reference` (an .npz from `workload.write_reference`) checks
both that they match and that the first Flower round gives our reference round's params.

Usage:
  .peer_venvs/flower/bin/python scripts/peers/flower_bench.py --workload w.json [--rounds 3]
      [--reference ref.npz] [--engine ray|inprocess] [--cpus-per-client 1]
Prints one JSON line on stdout (see scripts/peers/README.md); Flower/Ray logs go to stderr.
"""

import argparse
import os
import sys
import tempfile
import time
import warnings
from importlib import metadata

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")  # No network here; don't try.
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
warnings.filterwarnings("ignore", category=DeprecationWarning)

import numpy as np  # pylint: disable=g-import-not-at-top

# ---- Workload and data: scripts/peers/_common.py ----------------------------------------------
from _common import add_common_args  # pylint: disable=g-import-not-at-top
from _common import BENCH_MODELS  # pylint: disable=g-import-not-at-top
from _common import check_round1  # pylint: disable=g-import-not-at-top
from _common import load_inputs  # pylint: disable=g-import-not-at-top
from _common import print_result  # pylint: disable=g-import-not-at-top
from _common import NORM_EPS  # pylint: disable=g-import-not-at-top
from _common import POSITIVE_MARGIN  # pylint: disable=g-import-not-at-top
from _common import throughput  # pylint: disable=g-import-not-at-top


# ---- PyTorch model -----------------------------------------------------------------------------
import torch  # pylint: disable=g-import-not-at-top
from torch import nn  # pylint: disable=g-import-not-at-top
import torch.nn.functional as F  # pylint: disable=g-import-not-at-top


class BenchCNN(nn.Module):
  """The benchmark CNN in PyTorch (NCHW; padding=1 == SAME for 3x3, stride 1)."""

  def __init__(self, channels, embedding_dim):
    super().__init__()
    c1, c2, c3 = channels
    self.conv1 = nn.Conv2d(3, c1, 3, padding=1)
    self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
    self.conv3 = nn.Conv2d(c2, c3, 3, padding=1)
    self.embed = nn.Linear(c3, embedding_dim, bias=False)

  def forward(self, x):
    x = F.avg_pool2d(F.relu(self.conv1(x)), 2)
    x = F.avg_pool2d(F.relu(self.conv2(x)), 2)
    x = F.relu(self.conv3(x)).mean(dim=(2, 3))
    return F.normalize(self.embed(x), dim=-1, eps=NORM_EPS)


def flat_to_state_dict(flat):
  """HWIO kernels / [in, out] dense -> PyTorch OIHW / [out, in]."""
  sd = {}
  for i in (1, 2, 3):
    sd[f"conv{i}.weight"] = torch.from_numpy(
        np.ascontiguousarray(flat[f"conv{i}/kernel"].transpose(3, 2, 0, 1)))
    sd[f"conv{i}.bias"] = torch.from_numpy(np.ascontiguousarray(flat[f"conv{i}/bias"]))
  sd["embed.weight"] = torch.from_numpy(np.ascontiguousarray(flat["embed/kernel"].T))
  return sd


def state_dict_to_flat(sd):
  flat = {}
  for i in (1, 2, 3):
    flat[f"conv{i}/kernel"] = np.asarray(sd[f"conv{i}.weight"]).transpose(2, 3, 1, 0)
    flat[f"conv{i}/bias"] = np.asarray(sd[f"conv{i}.bias"])
  flat["embed/kernel"] = np.asarray(sd["embed.weight"]).T
  return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in flat.items()}


def local_train(model, images_u8, class_emb, w):
  """`local_steps` plain-SGD steps of the positive-only loss; batches cycle over the images."""
  opt = torch.optim.SGD(model.parameters(), lr=w["lr"])
  n, b = w["images_per_client"], w["batch_size"]
  wc = F.normalize(torch.from_numpy(np.array(class_emb, np.float32)), dim=-1, eps=NORM_EPS)
  model.train()
  for s in range(w["local_steps"]):
    idx = (s * b + np.arange(b)) % n
    x = torch.from_numpy(np.asarray(images_u8[idx])).permute(0, 3, 1, 2).float()
    x = (x - 127.5) / 128.0
    cos = model(x) @ wc
    loss = torch.square(torch.relu(POSITIVE_MARGIN - cos)).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


# ---- Flower apps -------------------------------------------------------------------------------
# pylint: disable=g-import-not-at-top
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
# pylint: enable=g-import-not-at-top


def make_client_app(w, data_dir, torch_threads):
  """A stock message-API ClientApp. Data: memory-mapped .npy files written by the server side."""
  client_app = ClientApp()

  @client_app.train()
  def train(msg: Message, context: Context) -> Message:
    torch.set_num_threads(torch_threads)
    cid = int(context.node_config["partition-id"])
    images = np.load(os.path.join(data_dir, "images.npy"), mmap_mode="r")[cid]
    class_emb = np.array(np.load(os.path.join(data_dir, "class_emb.npy"), mmap_mode="r")[cid])
    model = BenchCNN(BENCH_MODELS[w["model"]], w["embedding_dim"])
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    local_train(model, images, class_emb, w)
    content = RecordDict({
        "arrays": ArrayRecord(model.state_dict()),
        "metrics": MetricRecord({"num-examples": int(w["images_per_client"])}),
    })
    return Message(content=content, reply_to=msg)

  return client_app


def make_strategy(w):
  c = w["num_clients"]
  return FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=c,
                min_available_nodes=c, weighted_by_key="num-examples")


def run_ray(w, init_sd, data_dir, num_rounds, cpus_per_client, torch_threads):
  """Runs `num_rounds` rounds in Flower's Ray simulation; returns (stamps, final arrays)."""
  from flwr.simulation import run_simulation  # pylint: disable=g-import-not-at-top
  stamps = []  # time.perf_counter() before round 1 and after each round.
  result_holder = {}
  round1 = {}
  server_app = ServerApp()

  def evaluate_fn(server_round, arrays):
    stamps.append(time.perf_counter())
    if server_round == 1:
      round1["flat"] = state_dict_to_flat(arrays.to_torch_state_dict())
    return None

  @server_app.main()
  def main(grid: Grid, context: Context) -> None:  # pylint: disable=unused-argument
    result_holder["result"] = make_strategy(w).start(
        grid=grid, initial_arrays=ArrayRecord(init_sd), num_rounds=num_rounds,
        evaluate_fn=evaluate_fn)

  ncpu = os.cpu_count() or 1
  backend_config = {
      "client_resources": {"num_cpus": cpus_per_client, "num_gpus": 0.0},
      "init_args": {"num_cpus": ncpu, "num_gpus": 0, "include_dashboard": False,
                    "logging_level": "error", "log_to_driver": True},
  }
  run_simulation(server_app=server_app,
                 client_app=make_client_app(w, data_dir, torch_threads),
                 num_supernodes=w["num_clients"], backend_name="ray",
                 backend_config=backend_config)
  if "result" not in result_holder or len(stamps) != num_rounds + 1:
    raise RuntimeError(f"Flower simulation did not complete {num_rounds} rounds "
                       f"(got {max(len(stamps) - 1, 0)}); see the Flower/Ray log above")
  return stamps, round1.get("flat")


def run_inprocess(w, init_sd, data_dir, num_rounds, torch_threads):
  """FALLBACK (no Ray): the same ClientApp, called sequentially in this process."""
  from flwr.app import MessageType  # pylint: disable=g-import-not-at-top
  from flwr.app import RecordDict as RD  # pylint: disable=g-import-not-at-top
  from flwr.app import ConfigRecord  # pylint: disable=g-import-not-at-top
  from flwr.supercore.task_identity import TaskIdentity  # pylint: disable=g-import-not-at-top
  # Normally set by the SuperLink/ServerApp runtime; Message() reads them.
  TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0
  client_app = make_client_app(w, data_dir, torch_threads)
  strategy = make_strategy(w)
  arrays = ArrayRecord(init_sd)
  stamps = [time.perf_counter()]
  round1_flat = None
  for server_round in range(1, num_rounds + 1):
    replies = []
    for cid in range(w["num_clients"]):
      msg = Message(content=RD({"arrays": arrays,
                                "config": ConfigRecord({"server-round": server_round})}),
                    dst_node_id=cid + 1, message_type=MessageType.TRAIN)
      ctx = Context(run_id=0, node_id=cid + 1,
                    node_config={"partition-id": cid, "num-partitions": w["num_clients"]},
                    state=RD(), run_config={})
      replies.append(client_app(msg, ctx))
    arrays, _ = strategy.aggregate_train(server_round, replies)
    stamps.append(time.perf_counter())
    if server_round == 1:
      round1_flat = state_dict_to_flat(arrays.to_torch_state_dict())
  return stamps, round1_flat


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  add_common_args(parser)
  parser.add_argument("--engine", default="ray", choices=("ray", "inprocess"),
                      help="ray: Flower's simulation engine; inprocess: labelled fallback")
  parser.add_argument("--cpus-per-client", type=float, default=1.0,
                      help="Ray num_cpus per ClientApp (concurrency = cpus // this)")
  parser.add_argument("--torch-threads", type=int, default=1,
                      help="torch.set_num_threads inside each ClientApp")
  args = parser.parse_args(argv)

  t_start = time.perf_counter()
  w, images, class_emb, flat0, ref, check = load_inputs(args)

  with tempfile.TemporaryDirectory(prefix="flower_bench_") as data_dir:
    np.save(os.path.join(data_dir, "images.npy"), images)
    np.save(os.path.join(data_dir, "class_emb.npy"), class_emb)
    init_sd = flat_to_state_dict(flat0)
    num_rounds = args.rounds + 1
    if args.engine == "ray":
      stamps, round1_flat = run_ray(w, init_sd, data_dir, num_rounds, args.cpus_per_client,
                                    args.torch_threads)
    else:
      stamps, round1_flat = run_inprocess(w, init_sd, data_dir, num_rounds, args.torch_threads)
  total_s = time.perf_counter() - t_start

  per_round = [b - a for a, b in zip(stamps[:-1], stamps[1:])]
  first_round_s, round_s = per_round[0], per_round[1:]
  if ref is not None:
    check_round1(check, ref, round1_flat)

  ncpu = os.cpu_count() or 1
  out = {
      "peer": "flower" if args.engine == "ray" else "flower-inprocess-fallback",
      "version": metadata.version("flwr"),
      **throughput(w, round_s),
      "round_s": round_s,
      "first_round_s": first_round_s,
      "setup_s": stamps[0] - t_start,
      "total_s": total_s,
      "engine": ("flwr.simulation.run_simulation (Ray backend)" if args.engine == "ray" else
                 "FALLBACK: ClientApp called sequentially in-process, no Ray"),
      "concurrent_clientapps": (int(ncpu // args.cpus_per_client) if args.engine == "ray"
                                else 1),
      "torch": torch.__version__,
      "torch_threads_per_client": args.torch_threads,
      "ray": metadata.version("ray") if args.engine == "ray" else None,
      "cpu_count": ncpu,
  }
  print_result(out, w, check)
  return 0


if __name__ == "__main__":
  sys.exit(main())
