"""What the two NetSuite transports share: the target's settings and the one mapping from canonical events to
NetSuite's records (``mapping``: typed models with NetSuite's own record field names). ``connectors.netsuite_rest``
renders those records as REST JSON, ``connectors.netsuite_soap`` as SuiteTalk XML; neither maps on its own, so
one NetSuite account targeted by either connector gets the same documents."""
