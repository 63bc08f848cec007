"""The unit tests (`make test-fast`): the library, the plugin's app and deploy's helpers in one process each,
with no Airflow scheduler, api-server or browser. Their layout follows erfnet_tasks/ (backends/, datasets/,
results/); guarantees/ holds README "What we promise"'s tests, which cut across modules. Full-size ERFNet
tests are marked `slow`."""
