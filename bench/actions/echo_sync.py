"""Echo as a sync action: runs in the launcher's forked worker pool, one call per worker."""


def main(args):
    return args
