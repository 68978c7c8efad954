"""Why ENet missed CamVid's rare classes: the two checks quoted in the ENet card in docs/models.md.

    # Can a fresh ENet fit all classes at all? Plain cross-entropy on 8 fixed train frames
    # (1/2 scale); prints the predicted pixels per class every 100 steps.
    python scripts/enet_rare_classes.py overfit --upsample unpool --steps 800

    # Do a trained ENet's last features carry the classes it never predicts? Class-balanced
    # linear probe on the 16 features entering the final transposed conv (every 25th train frame).
    python scripts/enet_rare_classes.py probe --model runs/enet_camvid_stage2/best.safetensors

Both run on the CPU in a few minutes; --root defaults to ../shared/data/camvid.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from rtseg.data import labelled_dataset
from rtseg.data.transforms import Resize
from rtseg.models.enet import build_enet
from rtseg.zoo import load_model

MEAN = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
STD = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
IGNORE = 11  # CamVid's void label


def _tensor(image: np.ndarray) -> torch.Tensor:
    return (torch.from_numpy(image).permute(2, 0, 1).float() / 255 - MEAN) / STD


def overfit(args) -> None:
    torch.manual_seed(0)
    ds = labelled_dataset("camvid", args.root, "train", ignore_index=IGNORE)
    resize = Resize(176, 240)  # 1/2 scale, a multiple of 8 as ENet needs
    pairs = [resize(*ds.load_raw(i)) for i in range(0, len(ds), 46)][:8]
    x = torch.stack([_tensor(im) for im, _ in pairs])
    y = torch.stack([torch.from_numpy(m.astype(np.int64)) for _, m in pairs])
    print("labelled pixels per class", np.bincount(y[y != IGNORE].numpy(), minlength=11).tolist())
    net = build_enet(11, upsample=args.upsample)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    start = time.time()
    for step in range(args.steps + 1):
        net.train()
        loss = F.cross_entropy(net(x), y, ignore_index=IGNORE)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0:
            with torch.no_grad():
                pred = net.eval()(x).argmax(1)
            counts = np.bincount(pred[y != IGNORE].numpy(), minlength=11).tolist()
            print(f"step {step:4d} loss {loss.item():.3f} ({time.time() - start:.0f} s) predicted {counts}")


@torch.no_grad()
def probe(args) -> None:
    loaded = load_model(args.model)
    net, names = loaded.model.eval(), loaded.dataset.class_names
    feats: list[torch.Tensor] = []
    net.fullconv.register_forward_hook(lambda m, i, o: feats.append(i[0][0].flatten(1)))
    ds = labelled_dataset("camvid", args.root, "train", ignore_index=IGNORE)
    labels, top1, top2 = [], np.zeros(11), np.zeros(11)
    for i in range(0, len(ds), 25):
        image, mask = ds.load_raw(i)
        z = net(_tensor(image)[None])[0]
        m = torch.from_numpy(mask.astype(np.int64))
        order = z.topk(2, 0).indices
        for c in range(11):
            sel = m == c
            top1[c] += int((order[0][sel] == c).sum())
            top2[c] += int(((order[0][sel] == c) | (order[1][sel] == c)).sum())
        labels.append(m[::2, ::2].flatten())  # the features are at 1/2 resolution
    f, y = torch.cat(feats, 1).T, torch.cat(labels)
    keep = y != IGNORE
    f, y = f[keep], y[keep]
    counts = np.bincount(y.numpy(), minlength=11)
    print("class        pixels  top-1  top-2 (share of the class's full-resolution pixels)")
    full = np.maximum(counts * 4, 1)  # approximate: the top-k counts are at full resolution
    for c in range(11):
        print(f"{names[c]:11s} {counts[c]:8d}  {top1[c] / full[c]:.3f}  {top2[c] / full[c]:.3f}")
    # Class-balanced softmax regression on standardised features: can the classes be told apart?
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(y), generator=g)[:200_000]
    fs, ys = f[idx], y[idx]
    fs = (fs - fs.mean(0)) / (fs.std(0) + 1e-6)
    weight = len(ys) / (11 * torch.bincount(ys, minlength=11).clamp_min(1).float())
    lin = torch.nn.Linear(fs.shape[1], 11)
    opt = torch.optim.Adam(lin.parameters(), 0.05)
    with torch.enable_grad():
        for _ in range(400):
            loss = F.cross_entropy(lin(fs), ys, weight=weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
    p = lin(fs).argmax(1)
    print("balanced linear probe on the last features:")
    for c in range(11):
        recall = float((p[ys == c] == c).float().mean()) if (ys == c).any() else 0.0
        precision = float((ys[p == c] == c).float().mean()) if (p == c).any() else 0.0
        print(f"{names[c]:11s} recall {recall:.2f}  precision {precision:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default="../shared/data/camvid")
    sub = ap.add_subparsers(dest="cmd", required=True)
    o = sub.add_parser("overfit")
    o.add_argument("--upsample", choices=["unpool", "bilinear"], default="unpool")
    o.add_argument("--steps", type=int, default=800)
    o.add_argument("--lr", type=float, default=5e-3)
    o.set_defaults(func=overfit)
    p = sub.add_parser("probe")
    p.add_argument("--model", required=True, help="an ENet weight file or shipped name")
    p.set_defaults(func=probe)
    args = ap.parse_args()
    torch.set_num_threads(2)
    args.func(args)


if __name__ == "__main__":
    main()
