"""Run one RecBole 1.2.1 model on a pre-split dataset and print one JSON line of timings/metrics.

Runs INSIDE ``benchmarks/.recbole-venv`` (see ``make_recbole_venv.sh``); ``bench_vs_recbole.py``
and ``bench_seq_vs_recbole.py`` call it as a subprocess. General models read the atomic files
``<data-dir>/<dataset>/<dataset>.{train,valid,test}.inter`` (columns ``user_id:token
item_id:token``) written by the driver, used as given through RecBole's ``benchmark_filename``
(no filtering, no re-splitting). Sequential models (SASRec, BERT4Rec) read
``<dataset>.inter`` with a ``timestamp:float`` column that orders each user's items, and split
it with RecBole's own leave-one-out (``LS: valid_and_test``, time order), which the driver has
checked to be polyrec's; they validate every epoch (NDCG@10; RecBole stops after more than
``--patience`` validations without reaching the best, a tie counting as reaching it), stop
at the next epoch once ``--minutes`` of training epochs have run, and are tested with the best
validated weights. BERT4Rec's ``ft_ratio`` (RecBole's extra examples that mask only the last
item) is 0: cloze examples only.

What is timed (``time.perf_counter``, wall clock):

- ``epoch_seconds``: each call of ``Trainer._train_epoch`` (the forward/backward loop over the
  train loader, negative sampling included), wrapped so that nothing else is counted;
- ``fit_seconds``: model construction + ``Trainer.fit`` (EASE and ItemKNN do all their work in
  the model constructor; Pop counts items in its single epoch);
- ``eval_seconds``: ``Trainer.evaluate`` on the full-ranking test loader (scoring, masking of
  train/valid items, top-k and metrics). Building that loader (RecBole's per-user positive and
  history sets) is timed on its own as ``test_loader_seconds``; ``prepare_seconds`` is all of
  ``data_preparation`` (train, valid and test loaders).

RecBole's ``eval_batch_size`` counts user x item score rows, so it is set to
``eval_batch_users * n_items`` to score ``eval_batch_users`` users per batch, as polyrec does.
Validation is never run (``Trainer.fit`` gets no valid loader), so every epoch is training only.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import tempfile
import time
import warnings

os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from recbole.config import Config  # noqa: E402
from recbole.data import create_dataset, data_preparation  # noqa: E402
from recbole.utils import get_model, get_trainer, init_logger, init_seed  # noqa: E402

MODELS = ("BPR", "Pop", "ItemKNN", "EASE", "SASRec", "BERT4Rec")
SEQUENTIAL = ("SASRec", "BERT4Rec")


class Budget(Exception):
    """Raised at the start of an epoch once the training time budget is spent."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True, help="folder holding <dataset>/<dataset>.*.inter")
    p.add_argument("--dataset", required=True)
    p.add_argument("--model", required=True, choices=MODELS)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--embedding-size", type=int, default=64)
    p.add_argument("--train-batch-size", type=int, default=2048)
    p.add_argument("--eval-batch-users", type=int, default=4096)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--reg-weight", type=float, default=250.0, help="EASE lambda")
    p.add_argument("--knn-k", type=int, default=100, help="ItemKNN neighbours")
    p.add_argument("--shrink", type=float, default=0.0, help="ItemKNN shrink")
    p.add_argument("--seed", type=int, default=2020)
    p.add_argument("--threads", type=int, default=0, help="torch + BLAS threads (0: default)")
    seq = p.add_argument_group("sequential models (hidden size = --embedding-size)")
    seq.add_argument("--max-seq-length", type=int, default=50)
    seq.add_argument("--n-layers", type=int, default=2)
    seq.add_argument("--n-heads", type=int, default=2)
    seq.add_argument("--inner-size", type=int, default=256, help="feed-forward width")
    seq.add_argument("--hidden-act", default="gelu")
    seq.add_argument("--hidden-dropout", type=float, default=0.5)
    seq.add_argument("--attn-dropout", type=float, default=0.5)
    seq.add_argument("--mask-ratio", type=float, default=0.2, help="BERT4Rec")
    seq.add_argument("--patience", type=int, default=10, help="epochs without improvement")
    seq.add_argument("--minutes", type=float, default=0.0, help="training budget (0: none)")
    return p.parse_args(argv)


def build_config(args: argparse.Namespace, workdir: str) -> Config:
    config_dict = {
        "data_path": args.data_dir,
        "benchmark_filename": ["train", "valid", "test"],
        "load_col": {"inter": ["user_id", "item_id"]},
        "user_inter_num_interval": "[0,inf)",
        "item_inter_num_interval": "[0,inf)",
        "val_interval": None,
        "rm_dup_inter": None,
        "use_gpu": False,
        "device": "cpu",
        "seed": args.seed,
        "reproducibility": True,
        "show_progress": False,
        "state": "WARNING",
        "checkpoint_dir": os.path.join(workdir, "saved"),
        "epochs": args.epochs,
        "train_batch_size": args.train_batch_size,
        "learning_rate": args.lr,
        "weight_decay": args.weight_decay,
        "embedding_size": args.embedding_size,
        "reg_weight": args.reg_weight,
        "k": args.knn_k,
        "shrink": args.shrink,
        "eval_args": {
            "split": {"RS": [0.8, 0.1, 0.1]},  # ignored with benchmark_filename
            "group_by": "user",
            "order": "RO",
            "mode": "full",
        },
        "metrics": ["Recall", "NDCG"],
        "topk": [10, 20],
        "valid_metric": "NDCG@20",
        "metric_decimal_place": 6,
        "eval_step": args.epochs + 1,
        "stopping_step": args.epochs + 1,
    }
    if args.model in SEQUENTIAL:
        for key in ("benchmark_filename", "embedding_size", "reg_weight", "k", "shrink"):
            del config_dict[key]
        config_dict.update(
            {
                "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
                "eval_args": {
                    "split": {"LS": "valid_and_test"},
                    "group_by": "user",
                    "order": "TO",
                    "mode": "full",
                },
                "train_neg_sample_args": None,
                "loss_type": "CE",
                "MAX_ITEM_LIST_LENGTH": args.max_seq_length,
                "hidden_size": args.embedding_size,
                "n_layers": args.n_layers,
                "n_heads": args.n_heads,
                "inner_size": args.inner_size,
                "hidden_act": args.hidden_act,
                "hidden_dropout_prob": args.hidden_dropout,
                "attn_dropout_prob": args.attn_dropout,
                "mask_ratio": args.mask_ratio,
                "ft_ratio": 0.0,  # BERT4Rec: cloze examples only, as in the paper and polyrec
                "metrics": ["Hit", "NDCG", "Recall"],
                "valid_metric": "NDCG@10",
                "eval_step": 1,
                "stopping_step": args.patience,
            }
        )
    return Config(model=args.model, dataset=args.dataset, config_dict=config_dict)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    sys.argv = sys.argv[:1]  # RecBole's Config also parses --key=value from sys.argv
    if args.threads:  # torch's intra-op pool and the BLAS / OpenMP pools numpy and scipy use
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads)
    args.data_dir = os.path.abspath(args.data_dir)
    workdir = tempfile.mkdtemp(prefix="recbole-run-")
    os.chdir(workdir)  # RecBole writes ./log and ./log_tensorboard relative to the cwd

    t0 = time.perf_counter()
    config = build_config(args, workdir)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    logging.getLogger().setLevel(logging.WARNING)
    dataset = create_dataset(config)
    load_seconds = time.perf_counter() - t0

    # score eval_batch_users users per evaluation batch (RecBole counts user x item rows)
    config["eval_batch_size"] = args.eval_batch_users * dataset.item_num
    t0 = time.perf_counter()
    train_data, valid_data, test_data = data_preparation(config, dataset)
    prepare_seconds = time.perf_counter() - t0
    # the test loader alone (its per-user positive/history sets), built once more to time it
    t0 = time.perf_counter()
    test_data = type(test_data)(config, test_data._dataset, test_data._sampler, shuffle=False)
    test_loader_seconds = time.perf_counter() - t0

    init_seed(config["seed"], config["reproducibility"])
    t_fit = time.perf_counter()
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    epoch_seconds: list[float] = []
    losses: list[float] = []
    train_epoch = trainer._train_epoch

    sequential = args.model in SEQUENTIAL
    budget = args.minutes * 60 if args.minutes else float("inf")

    def timed_epoch(*a, **kw):
        if sum(epoch_seconds) > budget:  # training seconds, as polyrec's max_seconds
            raise Budget
        s = time.perf_counter()
        loss = train_epoch(*a, **kw)
        epoch_seconds.append(time.perf_counter() - s)
        losses.append(float(sum(loss) if isinstance(loss, tuple) else loss))
        return loss

    trainer._train_epoch = timed_epoch
    valid_curve: list[float] = []
    if sequential:  # validate every epoch, keep the best weights
        valid_epoch = trainer._valid_epoch

        def recorded_valid(*a, **kw):
            score, result = valid_epoch(*a, **kw)
            valid_curve.append(float(score))
            return score, result

        trainer._valid_epoch = recorded_valid
    stop = "epochs"
    try:
        trainer.fit(
            train_data,
            valid_data if sequential else None,
            verbose=False,
            saved=sequential,
            show_progress=False,
        )
    except Budget:
        stop = "budget"
    fit_seconds = time.perf_counter() - t_fit

    t0 = time.perf_counter()
    result = trainer.evaluate(
        test_data,
        load_best_model=sequential,
        model_file=trainer.saved_model_file if sequential else None,
        show_progress=False,
    )
    eval_seconds = time.perf_counter() - t0

    import recbole

    out = {
        "library": "recbole",
        "model": args.model,
        "dataset": args.dataset,
        "n_users": int(dataset.user_num - 1),  # RecBole reserves id 0 for padding
        "n_items": int(dataset.item_num - 1),
        "n_train": len(train_data._dataset),
        # a sequential test loader holds one row per test user (no uid_list)
        "n_test_users": len(test_data.uid_list) if not sequential else test_data.sample_size,
        "config": {
            k: getattr(args, k)
            for k in (
                "epochs",
                "embedding_size",
                "train_batch_size",
                "eval_batch_users",
                "lr",
                "weight_decay",
                "reg_weight",
                "knn_k",
                "shrink",
                "seed",
                "max_seq_length",
                "n_layers",
                "n_heads",
                "inner_size",
                "hidden_act",
                "hidden_dropout",
                "attn_dropout",
                "mask_ratio",
                "patience",
                "minutes",
            )
        },
        "metrics": {k.lower(): float(v) for k, v in result.items()},
        "timings": {
            "load_seconds": load_seconds,
            "prepare_seconds": prepare_seconds,
            "test_loader_seconds": test_loader_seconds,
            "fit_seconds": fit_seconds,
            "epoch_seconds": epoch_seconds,
            "eval_seconds": eval_seconds,
        },
        "train_loss": losses,
        "valid_ndcg@10": valid_curve,
        "stopped_by": stop,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "versions": {
            "recbole": recbole.__version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": sys.version.split()[0],
        },
        "torch_threads": torch.get_num_threads(),
    }
    print(json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    main()
