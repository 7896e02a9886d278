"""The data-access layer. Every function takes the org as a required argument and scopes by it.

The only queries not scoped by an org are named for their single purpose: the webhook lookups by
Kommo account id (`*_for_webhook`) and the job worker's claim (`claim_next_any_org`), whose result
is then handled strictly within the job's own org.
"""
