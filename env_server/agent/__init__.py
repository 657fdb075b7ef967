"""The sentient agent: appraisal, reply, termination and reward, independent of any backend."""
