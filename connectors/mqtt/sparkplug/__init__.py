"""Sparkplug B: the official Eclipse Tahu ``sparkplug_b.proto``, its generated bindings
(``scripts/gen_sparkplug``) and ``codec``, the pure payload/topic helpers built on them."""
