"""A pipeline emulator: one worker process per stage on loopback TCP, links shaped by bandwidth.

It runs a plan the way the original work's system ran on devices:
each stage is an ONNX model (:mod:`partopt.export`) run with onnxruntime in
its own process; stages stream tensors to each other over TCP with length
framing, every link paced by a token bucket to its bandwidth from the
cluster; a dispatcher feeds requests, collects results and re-plans when a
node or link fails. Modules: :mod:`~partopt.emulator.options` (settings),
:mod:`~partopt.emulator.deployment` (spawn, wire, tear down),
:mod:`~partopt.emulator.faults` (schedule, inject, detect),
:mod:`~partopt.emulator.dispatcher` (the request loop with recovery),
:mod:`~partopt.emulator.report` (what was measured), the wire protocol
(:mod:`~partopt.emulator.wire`, :mod:`~partopt.emulator.auth`) and the worker.
Re-planning is planning: :mod:`partopt.replan`.

>>> from partopt.emulator import EmulatorOptions, parse_fault
>>> EmulatorOptions(requests=10, faults=(parse_fault("n1@0.5"),)).faults[0].node
'n1'
"""

__all__ = [
    "FAULT_KINDS",
    "EmulationReport",
    "Emulator",
    "EmulatorError",
    "EmulatorOptions",
    "Fault",
    "Replan",
    "emulate",
    "format_report",
    "parse_fault",
    "replan",
]

# Imported on first use, so that worker processes (``python -m
# partopt.emulator.worker``) do not pay for the dispatcher's imports.
_WHERE = {
    "FAULT_KINDS": "options",
    "Emulator": "dispatcher",
    "EmulatorError": "options",
    "EmulatorOptions": "options",
    "Fault": "faults",
    "emulate": "dispatcher",
    "parse_fault": "faults",
    "Replan": "partopt.replan",
    "replan": "partopt.replan",
    "EmulationReport": "report",
    "format_report": "report",
}


def __getattr__(name: str):
    if name in _WHERE:
        import importlib

        where = _WHERE[name]
        module = where if "." in where else f"partopt.emulator.{where}"
        return getattr(importlib.import_module(module), name)
    raise AttributeError(f"module 'partopt.emulator' has no attribute {name!r}")
