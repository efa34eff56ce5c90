"""Downstream evaluation, the task harness: tasks, encoders, features, the one train-and-select loop (:mod:`.loop`),
baselines, the one metrics module (:mod:`.metrics`), the job setup (:mod:`.job`), the capability record
(:mod:`.record`), tables and the study; the capabilities' registry (:mod:`.capabilities`; the capabilities
themselves are :mod:`brainjepa.capabilities`)."""
