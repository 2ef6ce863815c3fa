async def main(args):
    for _ in range(args.get("n", 1)):
        yield {"s": "x" * args.get("size", 1)}
