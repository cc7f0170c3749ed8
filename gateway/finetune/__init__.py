"""Fine-tuning LoRA adapters on a registered base, gated by the base's licence.

A job: licence gate (:mod:`.gate`) → training-set manifest in the audit trail
(:mod:`.manifest`) → LoRA training on the base UNet (:mod:`.train`) → the adapter is loaded
back → a policy draft registers it (:mod:`.register`). :mod:`.job` runs those steps for the
command line and the API alike.
"""
