"""``callback demo``: the whole pipeline playing a carrier's callback traffic on the local stack.

``scenario`` (pure) turns a seed into the carrier to load (the sample carrier plus a population of
demo subscribers, with timers shortened so a demo takes a minute), the simulator's subscribers, and
the callbacks to place, each with what must come of it: its outcome, how often its number is
originated, its finished legs and who pays each. ``run`` starts the stack and every process, places
the callbacks, shows progress, and collects what the pipeline published; ``report`` checks it all
against the expectations, to the cent, and renders the report (docs/demo.md explains it).
"""
