"""Who is asking: built-in accounts, API tokens, sign-in sessions, proxy header.

``accounts`` owns the records; ``provider`` turns a request into a
jupyter_server ``User``; ``handlers`` serves sign-in and sign-out.
"""
