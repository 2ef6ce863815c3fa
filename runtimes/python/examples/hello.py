"""A sample action: greets `name` and echoes the activation id it ran as."""

import os


def main(args):
    name = args.get("name", "stranger")
    print(f"greeting {name}")
    return {"greeting": f"Hello, {name}!", "activation": os.environ.get("__OW_ACTIVATION_ID", "")}
