"""staredge.exporters"""
