def migrate(cr, version):
    """Queue channels and job functions became noupdate data (an integrator may reroute jobs
    in Job Queue): flag the existing ones before this update loads them, so that neither
    this update nor a later one overwrites a channel chosen since the last one."""
    if not version:
        return
    cr.execute(
        """UPDATE ir_model_data SET noupdate = true
            WHERE module = 'integration_hub' AND model IN ('queue.job.channel', 'queue.job.function')"""
    )
