"""`vipa sim collect | eval`: robot demonstrations and closed-loop evaluation in Meta-World."""

from __future__ import annotations

import argparse
import json
import sys

from vipa.ranges import count, nonnegative

DEFAULT_TASKS = ["reach-v3", "push-v3", "button-press-topdown-v3", "drawer-open-v3"]


def _collect(args: argparse.Namespace) -> int:
    from vipa.sim.collect import collect_demos

    stats = collect_demos(args.out, args.tasks, args.episodes, seed=args.seed, camera=args.camera,
                          size=args.size, max_steps=args.max_steps, only_success=not args.keep_failures,
                          noise=args.noise)
    for s in stats:
        print(json.dumps({"task": s.task, "attempted": s.attempted, "kept": s.kept, "expert_successes": s.successes}))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from vipa.sim.evaluate import evaluate

    policy = None
    server = None
    if args.checkpoint != "expert":
        from vipa.infer.server import PolicyClient, PolicyServer
        from vipa.infer.policy import PredictorPolicy

        if args.server:
            host, _, port = args.server.rpartition(":")
            policy = PolicyClient(host or "127.0.0.1", int(port))
        else:  # the same path a real robot uses: an in-process server and a client
            server = PolicyServer(PredictorPolicy.load(args.checkpoint), port=0).start()
            policy = PolicyClient("127.0.0.1", server.port)
    try:
        report = evaluate(policy, args.tasks, args.episodes, seed=args.seed, replan=args.replan,
                          camera=args.camera, size=args.size, max_steps=args.max_steps, out=args.out,
                          save_videos=args.save_videos)
    finally:
        if server is not None:
            policy.close()
            server.stop()
    for t in report["tasks"]:
        lo, hi = t["ci95"]
        print(f"{t['task']:28s} {t['successes']:3d}/{t['episodes']:<3d} = {t['success_rate']:.0%}  "
              f"(95% CI {lo:.0%}-{hi:.0%})")
    print(f"mean success rate {report['mean_success_rate']:.1%}", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sim", help="robot demonstrations and evaluation in simulation (Meta-World)")
    ssub = p.add_subparsers(dest="sim_command", metavar="SIM_COMMAND", required=True)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--env", default="metaworld", choices=["metaworld"], help="simulator")
        q.add_argument("--tasks", nargs="+", default=DEFAULT_TASKS, help="Meta-World task names")
        q.add_argument("--episodes", type=count(), default=50, help="episodes per task")
        q.add_argument("--seed", type=count(0), default=0, help="first episode seed (then seed+1, ...)")
        q.add_argument("--camera", default="workspace", help="workspace (framed on the table; default) or a Meta-World camera name")
        q.add_argument("--size", type=count(8), default=96, help="square image size in pixels")
        q.add_argument("--max-steps", type=count(), default=200, help="episode cap in control steps (80 per second)")

    c = ssub.add_parser("collect", help="record scripted-expert demonstrations as a LeRobot v3 dataset")
    common(c)
    c.add_argument("--out", required=True, help="new LeRobot v3 dataset folder")
    c.add_argument("--keep-failures", action="store_true", help="also keep demonstrations that failed")
    c.add_argument("--noise", type=nonnegative(), default=0.0, help="execution noise (sd, action units) on the xyz deltas: "
                   "the expert's action is recorded, a perturbed one executed, so the data shows recoveries (DART)")
    c.set_defaults(func=_collect)

    e = ssub.add_parser("eval", help="roll a checkpoint out; success rate per task with 95%% intervals")
    e.add_argument("checkpoint", help="checkpoint folder (from `vipa train post`), or 'expert' for the ceiling")
    common(e)
    e.add_argument("--replan", type=count(), default=8, help="actions executed from each predicted chunk")
    e.add_argument("--server", help="HOST:PORT of a running `vipa serve` instead of loading the checkpoint")
    e.add_argument("--out", help="folder for report.json, videos and rollouts")
    e.add_argument("--save-videos", type=count(0), default=2, help="rollouts saved per task")
    e.set_defaults(func=_eval)
