"""Label smoothing as a studylib technique, installed from outside the kit.

Szegedy, Vanhoucke, Ioffe, Shlens & Wojna, "Rethinking the Inception Architecture for Computer
Vision", CVPR 2016, section 7: the one-hot target is mixed with the uniform distribution over the
K classes, q' = (1 − ε)·onehot(y) + ε/K, so the loss is

    loss = (1 − ε)·CE(p, y) + ε · (1/K) Σ_k −log p_k

(ε = 0.1 in the paper, on ImageNet). It is claimed to improve generalization (clean accuracy); it
is also known to improve calibration (Müller et al. 2019), which the scorecard's ECE measures.
``torch.nn.functional.cross_entropy(..., label_smoothing=ε)`` computes the same quantity.

    pip install -e examples/studylib-label-smoothing
    studylib compare label_smoothing --hparams eps=0.1
"""

from studylib._lazy import lazy_import
from studylib.techniques import Param, Technique, register

F = lazy_import("torch.nn.functional")  # torch on first use: `studylib list` needs none

__version__ = "0.1.0"


@register
class LabelSmoothing(Technique):
    """Label smoothing (Szegedy et al., CVPR 2016): (1 − ε)·CE + ε·mean over classes of −log p."""

    name = "label_smoothing"
    summary = "label smoothing: (1 − ε)·CE + ε·mean_k(−log p_k) (Szegedy et al. 2016)"
    home_scenario = "clean"
    home_metric = "clean_acc"
    params = {"eps": Param(0.1, "smoothing ε: the weight of the uniform target", low=0.01, high=0.3, log=True,
                           ge=0, lt=1)}

    def loss(self, model, batch):
        log_p = F.log_softmax(model(batch.x), dim=1)
        ce = F.nll_loss(log_p, batch.y)
        uniform = -log_p.mean(dim=1).mean()  # (1/K) Σ_k −log p_k, averaged over the batch
        return (1 - self.hp.eps) * ce + self.hp.eps * uniform
