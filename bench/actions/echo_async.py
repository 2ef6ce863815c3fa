"""Echo as an async action: runs as a task on the launcher's event loop."""


async def main(args):
    return args
