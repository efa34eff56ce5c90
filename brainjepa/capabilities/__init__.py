"""BrainLM's capabilities, each a stage of the evaluation harness (:mod:`brainjepa.evaluate`) with one name in its
config key ``evaluate.capabilities.<name>``, its CLI subcommand (underscores as hyphens), its module here and its
test file: :mod:`.forecast`, :mod:`.reconstruction`, :mod:`.network_id`, :mod:`.perturbation`.

Their registry (record kinds, commands, headline metrics) and config, :mod:`brainjepa.evaluate.capabilities`, stay
in the harness: the metrics tables read it, and the harness sits below this package.
"""
