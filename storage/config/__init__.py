"""node.yaml parsed once into typed, frozen settings; errors name the field.

Owns: `settings.py` (NodeConfig and its sections, load_config, the template in `template.yaml`),
`values.py` (ConfigError and the shared validators), `limits.py`, `health.py`, `log.py`, `tls.py` (the
`tls:` section and its SSL contexts). May import: the standard library and PyYAML only; nothing
else in storage/.
"""
