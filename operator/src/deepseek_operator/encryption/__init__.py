"""Model weights encrypted at rest (SM4-GCM or AES-256-GCM), streamed in authenticated chunks:
the format (:mod:`.format`), the folder operations (:mod:`.folder`) and the commands (:mod:`.cli`)."""
