"""The geometry of single-shot detection, in plain torch: boxes, default boxes (anchors),
the center/size encoding, matching, the SSD loss, class-wise NMS and VOC-style mAP.

Boxes are ``(x1, y1, x2, y2)`` rows in image fractions (0..1), so anchors and targets do
not depend on the pixel size of the images. Everything here is deterministic on the CPU:
the same inputs give the same tensors, which exact resume after an interruption relies on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

#: SSD's variances: the center offset is divided by 0.1 and the log size ratio by 0.2,
#: which brings the regression targets to roughly unit scale
CENTER_VARIANCE = 0.1
SIZE_VARIANCE = 0.2
NEGATIVES_PER_POSITIVE = 3  # hard-negative mining keeps 3 background anchors per object


@dataclass(frozen=True)
class Detections:
    """One image's detections: boxes (K x 4, x1 y1 x2 y2), class ids (K) and scores (K),
    best first."""

    boxes: torch.Tensor
    labels: torch.Tensor
    scores: torch.Tensor


def area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[:, 2] - boxes[:, 0]).clamp_min(0) * (boxes[:, 3] - boxes[:, 1]).clamp_min(0)


def iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The intersection over union of every box of ``a`` (N x 4) with every box of ``b``
    (M x 4): N x M."""
    top_left = torch.max(a[:, None, :2], b[None, :, :2])
    bottom_right = torch.min(a[:, None, 2:], b[None, :, 2:])
    inter = (bottom_right - top_left).clamp_min(0).prod(dim=2)
    union = area(a)[:, None] + area(b)[None, :] - inter
    return inter / union.clamp_min(1e-12)


def default_boxes(
    grids: Sequence[int], aspect_ratios: Sequence[float], s_min: float = 0.2, s_max: float = 0.7
) -> torch.Tensor:
    """SSD's default boxes as (cx, cy, w, h) rows, cell by cell of each square feature map
    (``grids``: their sides, finest first), in the order the heads emit them.

    Map k has scale s_k, spread evenly from ``s_min`` to ``s_max``; each cell has a box of
    every aspect ratio at s_k and one square box at sqrt(s_k * s_k+1), as in the paper.
    """
    count = len(grids)
    scales = [s_min + (s_max - s_min) * k / max(count - 1, 1) for k in range(count)] + [1.0]
    rows: list[list[float]] = []
    for k, side in enumerate(grids):
        shapes = [(scales[k] * math.sqrt(r), scales[k] / math.sqrt(r)) for r in aspect_ratios]
        extra = math.sqrt(scales[k] * scales[k + 1])
        shapes.append((extra, extra))
        for i in range(side):
            for j in range(side):
                cx, cy = (j + 0.5) / side, (i + 0.5) / side
                rows.extend([cx, cy, w, h] for w, h in shapes)
    return torch.tensor(rows, dtype=torch.float32).clamp(0.0, 1.0)


def boxes_per_cell(aspect_ratios: Sequence[float]) -> int:
    return len(aspect_ratios) + 1


def corners(centered: torch.Tensor) -> torch.Tensor:
    """(cx, cy, w, h) -> (x1, y1, x2, y2)."""
    half = centered[:, 2:] / 2
    return torch.cat([centered[:, :2] - half, centered[:, :2] + half], dim=1)


def encode(boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """Regression targets of ``boxes`` (x1 y1 x2 y2) against ``anchors`` (cx cy w h)."""
    size = (boxes[:, 2:] - boxes[:, :2]).clamp_min(1e-6)
    center = (boxes[:, :2] + boxes[:, 2:]) / 2
    offset = (center - anchors[:, :2]) / (anchors[:, 2:] * CENTER_VARIANCE)
    scale = torch.log(size / anchors[:, 2:]) / SIZE_VARIANCE
    return torch.cat([offset, scale], dim=1)


def decode(deltas: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """The boxes (x1 y1 x2 y2) that ``deltas`` encode against ``anchors``."""
    center = anchors[:, :2] + deltas[:, :2] * CENTER_VARIANCE * anchors[:, 2:]
    # a wild prediction early in training must not overflow exp
    size = anchors[:, 2:] * torch.exp((deltas[:, 2:] * SIZE_VARIANCE).clamp(max=4.0))
    return corners(torch.cat([center, size], dim=1))


def match(
    gt_boxes: torch.Tensor, gt_labels: torch.Tensor, anchors: torch.Tensor, threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each anchor's target class (0: background, c + 1: class c) and box (x1 y1 x2 y2).

    An anchor takes the object it overlaps most when that IoU is at least ``threshold``;
    besides, every object takes its best anchor whatever the overlap, so that small or
    oddly shaped objects are learnt too.
    """
    count = len(anchors)
    if len(gt_boxes) == 0:
        return torch.zeros(count, dtype=torch.int64), torch.zeros(count, 4)
    overlaps = iou(gt_boxes, corners(anchors))  # objects x anchors
    best_overlap, best_object = overlaps.max(dim=0)
    best_anchor = overlaps.argmax(dim=1)
    # later objects win a shared best anchor: a fixed order, so the result is reproducible
    best_object[best_anchor] = torch.arange(len(gt_boxes))
    best_overlap[best_anchor] = 2.0
    classes = gt_labels[best_object] + 1
    classes[best_overlap < threshold] = 0
    return classes, gt_boxes[best_object]


def ssd_loss(
    class_logits: torch.Tensor,
    box_deltas: torch.Tensor,
    target_classes: torch.Tensor,
    target_boxes: torch.Tensor,
    anchors: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(cross-entropy, smooth L1), each summed and divided by the number of positive
    anchors in the batch. Cross-entropy counts every positive anchor and, per image, the
    negatives with the highest loss, three per positive (hard-negative mining)."""
    # class_logits: B x A x (C+1); box_deltas: B x A x 4; targets: B x A, B x A x 4
    positive = target_classes > 0
    positives = int(positive.sum())
    denominator = max(positives, 1)
    ce = F.cross_entropy(class_logits.transpose(1, 2), target_classes, reduction="none")
    with torch.no_grad():
        background = ce.clone()
        background[positive] = -math.inf
        rank = background.argsort(dim=1, descending=True, stable=True).argsort(dim=1)
        # an image with no object still trains on a few of its hardest negatives
        keep = (NEGATIVES_PER_POSITIVE * positive.sum(dim=1, keepdim=True)).clamp_min(
            NEGATIVES_PER_POSITIVE
        )
        chosen = positive | (rank < keep)
    cross_entropy = ce[chosen].sum() / denominator
    if positives == 0:
        return cross_entropy, box_deltas.sum() * 0.0
    targets = encode(target_boxes[positive], anchors.expand_as(target_boxes)[positive])
    smooth_l1 = F.smooth_l1_loss(box_deltas[positive], targets, reduction="sum") / denominator
    return cross_entropy, smooth_l1


def nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """Indices of the boxes greedy non-maximum suppression keeps, best first: a box goes
    when it overlaps a better kept box by more than ``threshold``."""
    order = scores.argsort(descending=True, stable=True)
    overlaps = iou(boxes[order], boxes[order])
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    keep: list[int] = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= overlaps[i] > threshold
    return order[torch.tensor(keep, dtype=torch.int64)]


def postprocess(
    class_logits: torch.Tensor,
    box_deltas: torch.Tensor,
    anchors: torch.Tensor,
    nms_threshold: float,
    score_threshold: float = 0.01,
    candidates: int = 200,
    max_detections: int = 100,
) -> Detections:
    """One image's detections from its head outputs (A x (C+1), A x 4): the (anchor,
    class) pairs scoring above ``score_threshold``, the best ``candidates`` of them, through
    class-wise NMS (boxes of different classes never suppress each other)."""
    probabilities = class_logits.softmax(dim=1)[:, 1:]
    boxes = decode(box_deltas, anchors).clamp(0.0, 1.0)
    scores = probabilities.flatten()
    index = torch.nonzero(scores > score_threshold).flatten()
    if len(index) > candidates:
        # topk's order among equal scores is not specified: sort, stably, instead
        index = index[scores[index].argsort(descending=True, stable=True)[:candidates]]
    classes = probabilities.shape[1]
    labels = index % classes
    chosen = boxes[index // classes]
    # one NMS for all classes: shifting each class's boxes to a square of its own keeps
    # boxes of different classes from ever overlapping
    keep = nms(chosen + 2.0 * labels[:, None].float(), scores[index], nms_threshold)
    keep = keep[:max_detections]
    return Detections(chosen[keep], labels[keep], scores[index][keep])


def average_precision(recall: torch.Tensor, precision: torch.Tensor) -> float:
    """The area under the precision/recall curve with precision made non-increasing
    (VOC 2010 and later: every recall point, no 11-point sampling)."""
    r = torch.cat([torch.tensor([0.0]), recall.double(), torch.tensor([1.0])])
    p = torch.cat([torch.tensor([0.0]), precision.double(), torch.tensor([0.0])])
    p = p.flip(0).cummax(0).values.flip(0)
    changes = torch.nonzero(r[1:] != r[:-1]).flatten()
    return float(((r[changes + 1] - r[changes]) * p[changes + 1]).sum())


def mean_average_precision(
    detections: Sequence[Detections],
    truths: Sequence[tuple[torch.Tensor, torch.Tensor]],
    num_classes: int,
    iou_threshold: float = 0.5,
) -> float:
    """VOC-style mAP: per class, detections over all images best first, each a true
    positive when it overlaps a not yet matched object of its class by at least
    ``iou_threshold``; the mean of the classes' average precisions over the classes that
    have objects (0.0 when none has)."""
    precisions = []
    for c in range(num_classes):
        objects = sum(int((labels == c).sum()) for _boxes, labels in truths)
        if objects == 0:
            continue
        scored: list[tuple[float, int, int]] = []  # (score, image, detection)
        for image, found in enumerate(detections):
            for k in torch.nonzero(found.labels == c).flatten().tolist():
                scored.append((float(found.scores[k]), image, k))
        # best first; ties by image and rank, so the figure never depends on sort luck
        scored.sort(key=lambda t: (-t[0], t[1], t[2]))
        used = [torch.zeros(int((labels == c).sum()), dtype=torch.bool) for _, labels in truths]
        hits = torch.zeros(len(scored))
        for n, (_score, image, k) in enumerate(scored):
            boxes, labels = truths[image]
            mine = boxes[labels == c]
            if len(mine) == 0:
                continue
            overlaps = iou(detections[image].boxes[k : k + 1], mine)[0]
            best = int(overlaps.argmax())
            if overlaps[best] >= iou_threshold and not used[image][best]:
                used[image][best] = True
                hits[n] = 1.0
        true_positives = hits.cumsum(0)
        recall = true_positives / objects
        precision = true_positives / torch.arange(1, len(scored) + 1)
        precisions.append(average_precision(recall, precision))
    return sum(precisions) / len(precisions) if precisions else 0.0
