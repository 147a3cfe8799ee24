"""Training: the one loop of every PyTorch model (:mod:`polyrec.train.trainer`) and torchrun
data parallelism (:mod:`polyrec.train.distributed`, also runnable with ``-m``, which is why this
package imports neither)."""
