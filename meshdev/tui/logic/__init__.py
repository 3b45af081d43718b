"""The dashboard's logic that needs no Textual (a contract keeps it so): the demo actions and
keys, failure explanations, number formats, frame pacing, the seams it is built against.
"""
