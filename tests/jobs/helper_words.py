"""A helper module that uses_helper.py imports (shipped with --py-files on a cluster)."""


def words(line):
    return [w.lower() for w in line.split()]
