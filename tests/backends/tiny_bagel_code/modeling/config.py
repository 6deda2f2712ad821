"""Plain attribute configs readable from the JSON files that ship with the weights."""
import json


class Config:
    defaults: dict = {}

    def __init__(self, **kwargs):
        self.__dict__.update({**self.defaults, **kwargs})

    @classmethod
    def from_json_file(cls, path):
        with open(path) as f:
            return cls(**json.load(f))
