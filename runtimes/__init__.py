"""staredge.runtimes"""
