"""The health monitor: probes per dialect, judging, migrations, history, `flask dbhealth`."""
