"""The README's PLEN wiring table is generated from config/hardware/plen.yaml and must be current."""
from op3_walk.hardware import wiring
from op3_walk.hardware.plen_config import load_hardware_config


def test_readme_wiring_table_is_current():
    assert wiring.main(["--check"]) == 0, "run: python -m op3_walk.hardware.wiring --write"


def test_wiring_table_lists_every_servo_and_passive_joint():
    cfg = load_hardware_config()
    table = wiring.wiring_table(cfg)
    for servo in cfg.servos:
        assert "| `%s` | %d |" % (servo.joint, servo.channel) in table
    for joint in cfg.passive_joints:
        assert "`%s` | no servo" % joint in table
